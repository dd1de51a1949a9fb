module github.com/mailsec/mailsec/bench

go 1.26.0

replace github.com/mailsec/mailsec => ../

require (
	github.com/ProtonMail/go-crypto v1.5.2
	github.com/emersion/go-smtp v0.25.1
	github.com/mailsec/mailsec v0.0.0-00010101000000-000000000000
	github.com/smallstep/pkcs7 v0.2.3
	github.com/wneessen/go-mail v0.8.1
)

require (
	github.com/cloudflare/circl v1.6.3 // indirect
	github.com/emersion/go-message v0.18.2 // indirect
	github.com/emersion/go-sasl v0.0.0-20241020182733-b788ff22d5a6 // indirect
	github.com/miekg/dns v1.1.73 // indirect
	github.com/xdg-go/scram v1.4.0 // indirect
	github.com/xdg-go/stringprep v1.0.4 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/net v0.62.0 // indirect
	golang.org/x/sync v0.24.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
)
