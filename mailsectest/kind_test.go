package mailsectest

import "testing"

func TestKindOf(t *testing.T) {
	for raw, want := range map[string]Kind{
		"Content-Type: multipart/encrypted;\r\n protocol=\"application/pgp-encrypted\"; boundary=x\r\n\r\n--x--\r\n": KindPGP,
		"Content-Type: multipart/encrypted; protocol=\"application/other\"; boundary=x\r\n\r\n":                      KindPlain,
		"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n\r\nMIAG\r\n":            KindSMIME,
		"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n\r\nMIAG\r\n":                               KindPlain,
		"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=y\r\n\r\n":               KindSigned,
		"Content-Type: text/plain\r\n\r\nhello\r\n":                                                                  KindPlain,
		"Subject: no type\r\n\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"\r\n":      KindPlain,
		"Content-Type: ;;;\r\n\r\n": KindPlain,
	} {
		if got := KindOf([]byte(raw)); got != want {
			t.Errorf("KindOf(%q) = %s, want %s", raw, got, want)
		}
	}
}
