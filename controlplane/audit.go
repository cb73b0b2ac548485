package controlplane

import meshv1 "minimesh/proto/mesh/v1"

// AuditedMethods are the AdminService methods that change state (or, for
// Backup, export the CA's keys): authn logs every call of them with the
// caller's certificate serial and SPIFFE ID. An Apply dry run is not
// logged. Every other AdminService method must be in readOnlyMethods; a
// test walks the service descriptor so a new method is classified.
func AuditedMethods() map[string]bool {
	return map[string]bool{
		meshv1.AdminService_CreateJoinToken_FullMethodName: true,
		meshv1.AdminService_RevokeJoinToken_FullMethodName: true,
		meshv1.AdminService_Apply_FullMethodName:           true,
		meshv1.AdminService_DeleteResource_FullMethodName:  true,
		meshv1.AdminService_RotateCA_FullMethodName:        true,
		meshv1.AdminService_RevokeProxy_FullMethodName:     true,
		meshv1.AdminService_DenyIdentity_FullMethodName:    true,
		meshv1.AdminService_RevokeOperator_FullMethodName:  true,
		meshv1.AdminService_Backup_FullMethodName:          true,
		meshv1.AdminService_ForgetProxy_FullMethodName:     true,
	}
}

// ReadOnlyMethods are the AdminService methods that change nothing.
func ReadOnlyMethods() map[string]bool {
	return map[string]bool{
		meshv1.AdminService_ListJoinTokens_FullMethodName:   true,
		meshv1.AdminService_ListCertificates_FullMethodName: true,
		meshv1.AdminService_ListProxies_FullMethodName:      true,
		meshv1.AdminService_GetResources_FullMethodName:     true,
		meshv1.AdminService_ProxyStatus_FullMethodName:      true,
		meshv1.AdminService_ProxyConfig_FullMethodName:      true,
		meshv1.AdminService_ProxyQuery_FullMethodName:       true,
		meshv1.AdminService_CAStatus_FullMethodName:         true,
		meshv1.AdminService_ListOperators_FullMethodName:    true,
		meshv1.AdminService_Version_FullMethodName:          true,
		meshv1.AdminService_Stats_FullMethodName:            true,
	}
}
