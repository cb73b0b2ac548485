package authz

import (
	"minimesh/api"
	meshv1 "minimesh/proto/mesh/v1"
)

const (
	web     = "spiffe://minimesh.local/ns/prod/sa/web"
	webDev  = "spiffe://minimesh.local/ns/dev/sa/web"
	batch   = "spiffe://minimesh.local/ns/prod/sa/batch"
	foreign = "spiffe://other.example/ns/prod/sa/web"
)

func policy(name string, dryRun bool, rules ...*meshv1.AuthorizationRule) *api.AuthorizationPolicy {
	return &api.AuthorizationPolicy{
		Metadata: api.Metadata{Name: name, Namespace: "prod"},
		Spec:     &meshv1.AuthorizationPolicySpec{Service: "api", Rules: rules, DryRun: dryRun},
	}
}

type ruleOpt func(*meshv1.AuthorizationRule)

func from(ids ...string) ruleOpt {
	return func(r *meshv1.AuthorizationRule) { r.From = append(r.From, ids...) }
}

func methods(m ...string) ruleOpt {
	return func(r *meshv1.AuthorizationRule) { r.Methods = append(r.Methods, m...) }
}

func exact(p string) ruleOpt {
	return func(r *meshv1.AuthorizationRule) {
		r.Paths = append(r.Paths, &meshv1.AuthorizationPath{Kind: &meshv1.AuthorizationPath_Exact{Exact: p}})
	}
}

func prefix(p string) ruleOpt {
	return func(r *meshv1.AuthorizationRule) {
		r.Paths = append(r.Paths, &meshv1.AuthorizationPath{Kind: &meshv1.AuthorizationPath_Prefix{Prefix: p}})
	}
}

// fold makes the rule's last path case-insensitive.
func fold() ruleOpt {
	return func(r *meshv1.AuthorizationRule) { r.Paths[len(r.Paths)-1].CaseInsensitive = true }
}

func mkRule(a meshv1.AuthorizationAction, opts ...ruleOpt) *meshv1.AuthorizationRule {
	r := &meshv1.AuthorizationRule{Action: a}
	for _, o := range opts {
		o(r)
	}
	return r
}

func allow(opts ...ruleOpt) *meshv1.AuthorizationRule {
	return mkRule(meshv1.AuthorizationAction_AUTHORIZATION_ACTION_ALLOW, opts...)
}

func deny(opts ...ruleOpt) *meshv1.AuthorizationRule {
	return mkRule(meshv1.AuthorizationAction_AUTHORIZATION_ACTION_DENY, opts...)
}

func audit(opts ...ruleOpt) *meshv1.AuthorizationRule {
	return mkRule(meshv1.AuthorizationAction_AUTHORIZATION_ACTION_AUDIT, opts...)
}
