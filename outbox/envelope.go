package outbox

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"unsafe"
)

// A message's envelope is sealed as one value. Its plaintext is either
//
//   - a JSON object (storedMessage), as the outbox wrote it before the
//     binary form; or
//   - the binary form: envelopeBinary, then three fields, each its
//     length as an unsigned varint and its octets: storedMessage as JSON
//     with Text and HTML left out, the text, the HTML.
//
// The bodies are kept out of JSON because reading a 10 KB text back from a
// JSON string costs more than the rest of an attempt's own work (the
// decoder validates, then unquotes, every octet).
const envelopeBinary = 0x01

// errEnvelopeFormat: an opened envelope the outbox did not write.
var errEnvelopeFormat = errors.New("outbox: envelope in no known form")

// encodeEnvelope writes sm in the binary form.
func encodeEnvelope(sm *storedMessage) ([]byte, error) {
	return encodeEnvelopeAfter(sm, 0, 0)
}

// encodeEnvelopeAfter writes sm in the binary form after head octets left
// free, with capacity for spare octets more: room for a seal's head and
// tag, so that the envelope is sealed in its own memory
// (keyring.sealAfter).
func encodeEnvelopeAfter(sm *storedMessage, head, spare int) ([]byte, error) {
	meta := *sm
	meta.Text, meta.HTML = "", ""
	mb, err := json.Marshal(&meta)
	if err != nil {
		return nil, err
	}
	b := make([]byte, head, head+1+3*binary.MaxVarintLen64+len(mb)+len(sm.Text)+len(sm.HTML)+spare)
	b = append(b, envelopeBinary)
	b = binary.AppendUvarint(b, uint64(len(mb)))
	b = append(b, mb...)
	b = binary.AppendUvarint(b, uint64(len(sm.Text)))
	b = append(b, sm.Text...)
	b = binary.AppendUvarint(b, uint64(len(sm.HTML)))
	b = append(b, sm.HTML...)
	return b, nil
}

// decodeEnvelope reads an opened envelope in either form.
func decodeEnvelope(b []byte) (*storedMessage, error) {
	return decodeEnvelopeAs(b, false)
}

// decodeEnvelopeAs is decodeEnvelope; when shared, b is given up by its
// caller, and the binary form's text and HTML are b's own memory, not
// copies of it: nothing may write to b after.
func decodeEnvelopeAs(b []byte, shared bool) (*storedMessage, error) {
	var sm storedMessage
	if len(b) > 0 && b[0] == '{' {
		if err := json.Unmarshal(b, &sm); err != nil {
			return nil, err
		}
		return &sm, nil
	}
	if len(b) == 0 || b[0] != envelopeBinary {
		return nil, errEnvelopeFormat
	}
	b = b[1:]
	var fields [3][]byte
	for i := range fields {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return nil, errEnvelopeFormat
		}
		fields[i], b = b[k:k+int(n)], b[k+int(n):]
	}
	if len(b) != 0 {
		return nil, errEnvelopeFormat
	}
	if err := json.Unmarshal(fields[0], &sm); err != nil {
		return nil, err
	}
	if sm.Text != "" || sm.HTML != "" {
		return nil, errEnvelopeFormat
	}
	if shared {
		sm.Text, sm.HTML = unsafeString(fields[1]), unsafeString(fields[2])
	} else {
		sm.Text, sm.HTML = string(fields[1]), string(fields[2])
	}
	return &sm, nil
}

// unsafeString is b as a string without a copy: b must never change after.
func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
