package sidecar

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	meshv1 "minimesh/proto/mesh/v1"
)

// configHandler serves /config: the snapshot in force, as JSON, or YAML
// with ?format=yaml, its secrets redacted (redactSnapshot). The sidecar
// serves it to loopback clients only; the operator sees the applied
// snapshot through meshd (meshctl proxy-config).
func configHandler(applied func() *meshv1.Snapshot) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		snap := applied()
		if snap == nil {
			http.Error(w, "no snapshot applied yet", http.StatusNotFound)
			return
		}
		b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(redactSnapshot(snap))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		if r.URL.Query().Get("format") == "yaml" {
			y, err := yaml.JSONToYAML(b)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.Header().Set("Content-Type", "application/yaml")
			_, _ = w.Write(y)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	})
}

// redactSnapshot returns a copy of snap for display: a ConfigFile's
// content (an app's settings, often its credentials, written 0600) is
// replaced by its size and SHA-256; its path and mode stay.
func redactSnapshot(snap *meshv1.Snapshot) *meshv1.Snapshot {
	out := proto.CloneOf(snap)
	for _, r := range out.GetResources() {
		if cf := r.GetConfigFile(); cf != nil && cf.GetContent() != "" {
			sum := sha256.Sum256([]byte(cf.GetContent()))
			cf.Content = fmt.Sprintf("<redacted: %d bytes, sha256 %s>", len(cf.GetContent()), hex.EncodeToString(sum[:]))
		}
	}
	return out
}
