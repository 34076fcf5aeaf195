package ctap2

import "fmt"

// Status is a CTAP status code (CTAP 2.1 §8.2.1). Every command handler
// returns one; StatusOK is the only success value.
type Status byte

// Status codes from CTAP 2.1 §8.2.1, named after the specification.
const (
	StatusOK                  Status = 0x00 // CTAP2_OK
	ErrInvalidCommand         Status = 0x01 // CTAP1_ERR_INVALID_COMMAND
	ErrInvalidParameter       Status = 0x02 // CTAP1_ERR_INVALID_PARAMETER
	ErrInvalidLength          Status = 0x03 // CTAP1_ERR_INVALID_LENGTH
	ErrCBORUnexpectedType     Status = 0x11 // CTAP2_ERR_CBOR_UNEXPECTED_TYPE
	ErrInvalidCBOR            Status = 0x12 // CTAP2_ERR_INVALID_CBOR
	ErrMissingParameter       Status = 0x14 // CTAP2_ERR_MISSING_PARAMETER
	ErrLimitExceeded          Status = 0x15 // CTAP2_ERR_LIMIT_EXCEEDED
	ErrCredentialExcluded     Status = 0x19 // CTAP2_ERR_CREDENTIAL_EXCLUDED
	ErrProcessing             Status = 0x21 // CTAP2_ERR_PROCESSING
	ErrInvalidCredential      Status = 0x22 // CTAP2_ERR_INVALID_CREDENTIAL
	ErrUnsupportedAlgorithm   Status = 0x26 // CTAP2_ERR_UNSUPPORTED_ALGORITHM
	ErrOperationDenied        Status = 0x27 // CTAP2_ERR_OPERATION_DENIED
	ErrKeyStoreFull           Status = 0x28 // CTAP2_ERR_KEY_STORE_FULL
	ErrUnsupportedOption      Status = 0x2B // CTAP2_ERR_UNSUPPORTED_OPTION
	ErrInvalidOption          Status = 0x2C // CTAP2_ERR_INVALID_OPTION
	ErrKeepaliveCancel        Status = 0x2D // CTAP2_ERR_KEEPALIVE_CANCEL
	ErrNoCredentials          Status = 0x2E // CTAP2_ERR_NO_CREDENTIALS
	ErrUserActionTimeout      Status = 0x2F // CTAP2_ERR_USER_ACTION_TIMEOUT
	ErrNotAllowed             Status = 0x30 // CTAP2_ERR_NOT_ALLOWED
	ErrPinInvalid             Status = 0x31 // CTAP2_ERR_PIN_INVALID
	ErrPinBlocked             Status = 0x32 // CTAP2_ERR_PIN_BLOCKED
	ErrPinAuthInvalid         Status = 0x33 // CTAP2_ERR_PIN_AUTH_INVALID
	ErrPinAuthBlocked         Status = 0x34 // CTAP2_ERR_PIN_AUTH_BLOCKED
	ErrPinNotSet              Status = 0x35 // CTAP2_ERR_PIN_NOT_SET
	ErrPUATRequired           Status = 0x36 // CTAP2_ERR_PUAT_REQUIRED
	ErrPinPolicyViolation     Status = 0x37 // CTAP2_ERR_PIN_POLICY_VIOLATION
	ErrRequestTooLarge        Status = 0x39 // CTAP2_ERR_REQUEST_TOO_LARGE
	ErrUPRequired             Status = 0x3B // CTAP2_ERR_UP_REQUIRED
	ErrUVBlocked              Status = 0x3C // CTAP2_ERR_UV_BLOCKED
	ErrUVInvalid              Status = 0x3F // CTAP2_ERR_UV_INVALID
	ErrUnauthorizedPermission Status = 0x40 // CTAP2_ERR_UNAUTHORIZED_PERMISSION
	ErrUnsupportedExtension   Status = 0x16 // CTAP2_ERR_UNSUPPORTED_EXTENSION
	ErrOther                  Status = 0x7F // CTAP1_ERR_OTHER
	ErrInvalidSubcommand      Status = 0x3E // CTAP2_ERR_INVALID_SUBCOMMAND
)

var statusNames = map[Status]string{
	StatusOK:                  "CTAP2_OK",
	ErrInvalidCommand:         "CTAP1_ERR_INVALID_COMMAND",
	ErrInvalidParameter:       "CTAP1_ERR_INVALID_PARAMETER",
	ErrInvalidLength:          "CTAP1_ERR_INVALID_LENGTH",
	ErrCBORUnexpectedType:     "CTAP2_ERR_CBOR_UNEXPECTED_TYPE",
	ErrInvalidCBOR:            "CTAP2_ERR_INVALID_CBOR",
	ErrMissingParameter:       "CTAP2_ERR_MISSING_PARAMETER",
	ErrLimitExceeded:          "CTAP2_ERR_LIMIT_EXCEEDED",
	ErrCredentialExcluded:     "CTAP2_ERR_CREDENTIAL_EXCLUDED",
	ErrProcessing:             "CTAP2_ERR_PROCESSING",
	ErrInvalidCredential:      "CTAP2_ERR_INVALID_CREDENTIAL",
	ErrUnsupportedAlgorithm:   "CTAP2_ERR_UNSUPPORTED_ALGORITHM",
	ErrOperationDenied:        "CTAP2_ERR_OPERATION_DENIED",
	ErrKeyStoreFull:           "CTAP2_ERR_KEY_STORE_FULL",
	ErrUnsupportedOption:      "CTAP2_ERR_UNSUPPORTED_OPTION",
	ErrInvalidOption:          "CTAP2_ERR_INVALID_OPTION",
	ErrKeepaliveCancel:        "CTAP2_ERR_KEEPALIVE_CANCEL",
	ErrNoCredentials:          "CTAP2_ERR_NO_CREDENTIALS",
	ErrUserActionTimeout:      "CTAP2_ERR_USER_ACTION_TIMEOUT",
	ErrNotAllowed:             "CTAP2_ERR_NOT_ALLOWED",
	ErrPinInvalid:             "CTAP2_ERR_PIN_INVALID",
	ErrPinBlocked:             "CTAP2_ERR_PIN_BLOCKED",
	ErrPinAuthInvalid:         "CTAP2_ERR_PIN_AUTH_INVALID",
	ErrPinAuthBlocked:         "CTAP2_ERR_PIN_AUTH_BLOCKED",
	ErrPinNotSet:              "CTAP2_ERR_PIN_NOT_SET",
	ErrPUATRequired:           "CTAP2_ERR_PUAT_REQUIRED",
	ErrPinPolicyViolation:     "CTAP2_ERR_PIN_POLICY_VIOLATION",
	ErrRequestTooLarge:        "CTAP2_ERR_REQUEST_TOO_LARGE",
	ErrUPRequired:             "CTAP2_ERR_UP_REQUIRED",
	ErrUVBlocked:              "CTAP2_ERR_UV_BLOCKED",
	ErrUVInvalid:              "CTAP2_ERR_UV_INVALID",
	ErrUnauthorizedPermission: "CTAP2_ERR_UNAUTHORIZED_PERMISSION",
	ErrUnsupportedExtension:   "CTAP2_ERR_UNSUPPORTED_EXTENSION",
	ErrOther:                  "CTAP1_ERR_OTHER",
	ErrInvalidSubcommand:      "CTAP2_ERR_INVALID_SUBCOMMAND",
}

// Error makes Status usable as an error value, so handlers can return
// typed CTAP errors through ordinary Go error paths.
func (s Status) Error() string {
	if n, ok := statusNames[s]; ok {
		return fmt.Sprintf("%s (0x%02X)", n, byte(s))
	}
	return fmt.Sprintf("CTAP status 0x%02X", byte(s))
}
