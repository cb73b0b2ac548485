// Package admin implements meshv1.AdminService, the operator's API that
// meshctl calls. Every method needs the operator identity; the authn
// interceptor enforces that before a handler runs.
package admin
