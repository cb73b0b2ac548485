package inject

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// Inject adds the redirect and the proxy in front of the pod's own init
// containers and moves the app's probe to the proxy's admin port.
func ExampleInject() {
	in := []byte(`apiVersion: v1
kind: Pod
metadata:
  name: api
  namespace: demo
spec:
  serviceAccountName: api
  containers:
  - name: api
    image: example/api:1.0
    ports:
    - containerPort: 8080
    readinessProbe:
      httpGet:
        path: /ready
        port: 8080
`)
	out, err := Inject(in, Options{
		Image: "minimesh/minimesh:v1",
		// meshctl inject asks meshd for them: every root of its bundle.
		CAPins: []string{"sha256:5c4f2a8b4c1d07e6a1f3b9d2e8c7a6b5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9"},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(out, &pod); err != nil {
		fmt.Println(err)
		return
	}
	for _, c := range pod.Spec.InitContainers {
		fmt.Println("init:", c.Name, c.Args[:2])
	}
	p := pod.Spec.Containers[0].ReadinessProbe.HTTPGet
	fmt.Println("readiness:", p.Port.IntValue(), p.Path)
	// Output:
	// init: mesh-redirect [redirect --proxy-uid=1337]
	// init: mesh-proxy [--control-plane=meshd.minimesh-system.svc:15010 --trust-domain=minimesh.local]
	// readiness: 15020 /app-health/api/readyz
}
