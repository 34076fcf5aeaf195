package ctap2

import "github.com/fxamacker/cbor/v2"

// Command bytes of the authenticator API (CTAP 2.1 §6).
const (
	CmdMakeCredential   byte = 0x01
	CmdGetAssertion     byte = 0x02
	CmdGetInfo          byte = 0x04
	CmdClientPIN        byte = 0x06
	CmdReset            byte = 0x07
	CmdGetNextAssertion byte = 0x08
	CmdSelection        byte = 0x0B
	CmdConfig           byte = 0x0D
)

// PublicKeyCredentialRpEntity (WebAuthn §5.4.2).
type RpEntity struct {
	ID   *string `cbor:"id"`
	Name string  `cbor:"name,omitempty"`
}

// PublicKeyCredentialUserEntity (WebAuthn §5.4.3).
type UserEntity struct {
	ID          []byte `cbor:"id"`
	Name        string `cbor:"name,omitempty"`
	DisplayName string `cbor:"displayName,omitempty"`
}

// PublicKeyCredentialParameters (WebAuthn §5.3).
type CredentialParameters struct {
	Type *string `cbor:"type"`
	Alg  *int64  `cbor:"alg"`
}

// PublicKeyCredentialDescriptor (WebAuthn §5.8.3).
type CredentialDescriptor struct {
	Type       *string  `cbor:"type"`
	ID         []byte   `cbor:"id"`
	Transports []string `cbor:"transports,omitempty"`
}

// credentialDescriptorOut is the response form: exactly id and type.
type credentialDescriptorOut struct {
	ID   []byte `cbor:"id"`
	Type string `cbor:"type"`
}

// MakeCredentialRequest is authenticatorMakeCredential's parameter map
// (CTAP 2.1 §6.1).
type MakeCredentialRequest struct {
	ClientDataHash        []byte                     `cbor:"1,keyasint"`
	RP                    *RpEntity                  `cbor:"2,keyasint"`
	User                  *UserEntity                `cbor:"3,keyasint"`
	PubKeyCredParams      []CredentialParameters     `cbor:"4,keyasint"`
	ExcludeList           []CredentialDescriptor     `cbor:"5,keyasint"`
	Extensions            map[string]cbor.RawMessage `cbor:"6,keyasint"`
	Options               map[string]bool            `cbor:"7,keyasint"`
	PinUvAuthParam        []byte                     `cbor:"8,keyasint"`
	PinUvAuthProtocol     *uint64                    `cbor:"9,keyasint"`
	EnterpriseAttestation *uint64                    `cbor:"10,keyasint"`
}

// MakeCredentialResponse is authenticatorMakeCredential's response map.
type MakeCredentialResponse struct {
	Fmt          string         `cbor:"1,keyasint"`
	AuthData     []byte         `cbor:"2,keyasint"`
	AttStmt      map[string]any `cbor:"3,keyasint"`
	LargeBlobKey []byte         `cbor:"5,keyasint,omitempty"`
}

// GetAssertionRequest is authenticatorGetAssertion's parameter map
// (CTAP 2.1 §6.2).
type GetAssertionRequest struct {
	RPID              *string                    `cbor:"1,keyasint"`
	ClientDataHash    []byte                     `cbor:"2,keyasint"`
	AllowList         []CredentialDescriptor     `cbor:"3,keyasint"`
	Extensions        map[string]cbor.RawMessage `cbor:"4,keyasint"`
	Options           map[string]bool            `cbor:"5,keyasint"`
	PinUvAuthParam    []byte                     `cbor:"6,keyasint"`
	PinUvAuthProtocol *uint64                    `cbor:"7,keyasint"`
}

// userEntityOut is the user member of a getAssertion response; name and
// displayName only appear after user verification (CTAP 2.1 §6.2.2).
type userEntityOut struct {
	ID          []byte `cbor:"id"`
	Name        string `cbor:"name,omitempty"`
	DisplayName string `cbor:"displayName,omitempty"`
}

// GetAssertionResponse is authenticatorGetAssertion's (and
// authenticatorGetNextAssertion's) response map.
type GetAssertionResponse struct {
	Credential          credentialDescriptorOut `cbor:"1,keyasint"`
	AuthData            []byte                  `cbor:"2,keyasint"`
	Signature           []byte                  `cbor:"3,keyasint"`
	User                *userEntityOut          `cbor:"4,keyasint,omitempty"`
	NumberOfCredentials int                     `cbor:"5,keyasint,omitempty"`
	// UserSelected (CTAP 2.1 §6.2.2): the person chose this credential
	// on the authenticator (our prompt named the account and was
	// approved), so the platform need not ask again. Only in a response
	// to a discoverable request with exactly one credential.
	UserSelected bool   `cbor:"6,keyasint,omitempty"`
	LargeBlobKey []byte `cbor:"7,keyasint,omitempty"`
}

// algorithmOut is one entry of getInfo's algorithms list.
type algorithmOut struct {
	Alg  int64  `cbor:"alg"`
	Type string `cbor:"type"`
}

// GetInfoResponse is authenticatorGetInfo's response (CTAP 2.1 §6.4).
type GetInfoResponse struct {
	Versions                         []string        `cbor:"1,keyasint"`
	Extensions                       []string        `cbor:"2,keyasint,omitempty"`
	AAGUID                           []byte          `cbor:"3,keyasint"`
	Options                          map[string]bool `cbor:"4,keyasint"`
	MaxMsgSize                       int             `cbor:"5,keyasint"`
	PinUvAuthProtocols               []int           `cbor:"6,keyasint,omitempty"`
	MaxCredentialCountInList         int             `cbor:"7,keyasint"`
	MaxCredentialIDLength            int             `cbor:"8,keyasint"`
	Transports                       []string        `cbor:"9,keyasint"`
	Algorithms                       []algorithmOut  `cbor:"10,keyasint"`
	ForcePINChange                   bool            `cbor:"12,keyasint"`
	MinPINLength                     int             `cbor:"13,keyasint"`
	MaxSerializedLargeBlobArray      int             `cbor:"11,keyasint"`
	FirmwareVersion                  int             `cbor:"14,keyasint,omitempty"`
	MaxCredBlobLength                int             `cbor:"15,keyasint"`
	MaxRPIDsForSetMinPINLength       int             `cbor:"16,keyasint"`
	PreferredPlatformUvAttempts      int             `cbor:"17,keyasint,omitempty"`
	UVModality                       int             `cbor:"18,keyasint,omitempty"`
	RemainingDiscoverableCredentials int             `cbor:"20,keyasint"`
}

const credentialTypePublicKey = "public-key"
