package proxy

import "net/http"

// ExternalRouter finds the handler of the ExternalService (http or https)
// that a request's Host names ("name" or "name:port"), nil for none.
// *external.Set is one.
type ExternalRouter interface {
	Route(host string) http.Handler
}

// ExternalObserver returns what records a call to an ExternalService in
// the outbound's metrics, as a call to a service of the mesh is:
// minimesh_proxy_outbound_requests_total and
// minimesh_proxy_outbound_request_duration_seconds with the external
// service's name and namespace as destination_service and
// destination_namespace and destination_kind "external" (a service of
// the mesh with the same name is another series; MaxSourceServices
// values per observer), and the outbound listener's requests_total and
// request_duration_seconds. code 0 counts as "other".
func (m *Metrics) ExternalObserver() func(name, namespace string, code int, seconds float64) {
	dests := newDestinationSet(m, destExternal)
	lm := m.listener(ListenerOutbound)
	return func(name, namespace string, code int, seconds float64) {
		dests.get(name+"."+namespace).observe(code, seconds)
		lm.observe(code, seconds)
	}
}
