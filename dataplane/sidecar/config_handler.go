package sidecar

import (
	"net/http"

	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	meshv1 "minimesh/proto/mesh/v1"
)

// configHandler serves /config: the snapshot in force, as JSON, or YAML
// with ?format=yaml.
func configHandler(applied func() *meshv1.Snapshot) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		snap := applied()
		if snap == nil {
			http.Error(w, "no snapshot applied yet", http.StatusNotFound)
			return
		}
		b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(snap)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
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
