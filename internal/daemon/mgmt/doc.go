// Package mgmt serves the management operations of package mgmtapi on the
// daemon's control socket, over the running *ctap2.Authenticator: it turns
// requests into calls of the authenticator's management API and the
// answers into mgmtapi's wire types, converting each credential once.
//
// Only passkeyd links it: it imports ctap2 and tpm, and through them the
// store and the TPM. passkeyctl must not import it; the client side needs
// only mgmtapi and control.
package mgmt
