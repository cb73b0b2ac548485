package push

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	// Registers the proto codec this one delegates to.
	_ "google.golang.org/grpc/encoding/proto"

	meshv1 "minimesh/proto/mesh/v1"
)

// encoded is a StreamResponse marshaled once and sent on many streams.
// Every proxy of a group gets the same snapshot: marshaling it once per
// version instead of once per stream is what keeps a fan-out to thousands
// of proxies cheap in CPU and memory (the bytes are shared, not copied per
// stream, until the transport writes them).
type encoded struct {
	b []byte
}

func encodeSnapshot(snap *meshv1.Snapshot) (*encoded, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&meshv1.StreamResponse{Message: &meshv1.StreamResponse_Snapshot{Snapshot: snap}})
	if err != nil {
		return nil, err
	}
	return &encoded{b: b}, nil
}

// Codec is the gRPC codec meshd serves with: the standard proto codec, plus
// pass-through of pre-encoded messages.
func Codec() encoding.CodecV2 {
	return codec{encoding.GetCodecV2("proto")}
}

type codec struct{ encoding.CodecV2 }

// Marshal implements encoding.CodecV2.
func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if e, ok := v.(*encoded); ok {
		// SliceBuffer's Free is a no-op: the shared bytes are never recycled.
		return mem.BufferSlice{mem.SliceBuffer(e.b)}, nil
	}
	return c.CodecV2.Marshal(v)
}

// Name implements encoding.CodecV2.
func (c codec) Name() string { return "proto" }
