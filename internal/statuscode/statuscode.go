// Package statuscode holds the plain-words vocabulary of RFC 3463
// enhanced mail system status codes: one sentence per code that a support
// person can act on, for the codes of RFC 3463 and of the IANA registry
// "Enumerated Status Codes" (SMTP Enhanced Status Codes), and a fallback
// per subject and per class for codes it does not list. Package mailsec
// exposes it as EnhancedCode.Explain; it is a leaf so that every package
// can share one vocabulary.
package statuscode

// Lookup returns the sentence for the code class.subject.detail, and
// whether the code itself is listed (false: the sentence is the fallback
// for its subject, or for its class). Class is 2, 4 or 5; any other class
// gets the sentence for an unknown code.
func Lookup(class, subject, detail int) (text string, listed bool) {
	if class != 2 && class != 4 && class != 5 {
		return "The server gave a status code that is not defined; read the server's own message for what went wrong.", false
	}
	if class == 2 {
		if t, ok := success[[2]int{subject, detail}]; ok {
			return t, true
		}
		return "The message was accepted.", subject == 0 && detail == 0
	}
	if t, ok := details[[2]int{subject, detail}]; ok {
		return t, true
	}
	if t, ok := subjects[subject]; ok {
		return t, false
	}
	return "The server refused the message for a reason it did not classify; read the server's own message for what went wrong.", false
}

// Retry reports whether trying again later, unchanged, can help a failure
// with a code of this class: RFC 3463 §3.2 and §3.3 make class 4 a
// persistent transient failure ("the message as sent is valid, but ...
// some temporary event prevents" delivery) and class 5 a permanent one
// ("not likely to be resolved by resending the message in the current
// form"). Class 2 is a success: there is nothing to retry.
func Retry(class int) bool { return class == 4 }

// success are the sentences for class 2 codes whose detail means more than
// "accepted".
var success = map[[2]int]string{
	{1, 5}: "The recipient's address was accepted.",
	{6, 4}: "The message was delivered, but converted on the way in a way that lost some of its content.",
	{7, 0}: "The message was accepted.",
}

// subjects are the fallbacks for codes of class 4 or 5 not listed in
// details, by subject (RFC 3463 §3.1 to §3.8).
var subjects = map[int]string{
	0: "The receiving server refused the message without saying why; read the server's own message for the reason.",
	1: "There is a problem with the recipient's or the sender's address.",
	2: "There is a problem with the recipient's mailbox.",
	3: "The receiving mail system has a problem of its own, not caused by the message.",
	4: "The message could not be routed or carried across the network to the recipient's server.",
	5: "The sending and receiving servers did not understand each other (a protocol error).",
	6: "The message's content or format could not be handled by the receiving side.",
	7: "The message was refused by a security or policy rule.",
}

// details are the sentences for the codes of classes 4 and 5, by subject
// and detail: RFC 3463 and the codes later RFCs added to the IANA
// registry (each cited).
var details = map[[2]int]string{
	// Other or undefined status (RFC 3463 §3.1).
	{0, 0}: "The receiving server refused the message without saying why; read the server's own message for the reason.",

	// Addressing status (RFC 3463 §3.2).
	{1, 0}:  "There is a problem with the recipient's or the sender's address.",
	{1, 1}:  "The recipient's address does not exist at the receiving domain: check it for typos, or ask the recipient for a current address.",
	{1, 2}:  "The recipient's domain does not exist or does not accept mail: check the part after the @ for typos.",
	{1, 3}:  "The recipient's address is not a valid email address.",
	{1, 4}:  "The recipient's address matches several mailboxes at the receiving side, which could not tell which one was meant.",
	{1, 5}:  "The recipient's address was accepted.",
	{1, 6}:  "The recipient's mailbox has moved and has no forwarding address: ask the recipient for a current address.",
	{1, 7}:  "The sender's address is not valid in the eyes of the receiving server.",
	{1, 8}:  "The sender's domain does not exist or cannot receive replies, so the receiving server refused the message.",
	{1, 9}:  "The message was passed on to a mail system that does not report delivery, so its final fate is unknown (RFC 3886).",
	{1, 10}: "The recipient's address does not exist, or its domain accepts no mail at all (RFC 7505 gives this code to a domain with a null MX record; Microsoft's servers give it to an unknown recipient).",

	// Mailbox status (RFC 3463 §3.3).
	{2, 0}: "There is a problem with the recipient's mailbox.",
	{2, 1}: "The recipient's mailbox exists but is disabled and accepts no mail.",
	{2, 2}: "The recipient's mailbox is full: the recipient must make room before mail can be delivered.",
	{2, 3}: "The message is larger than the recipient's mailbox accepts: send a smaller message or share the file another way.",
	{2, 4}: "The recipient is a mailing list that could not be expanded to its members.",

	// Mail system status (RFC 3463 §3.4).
	{3, 0}: "The receiving mail system has a problem of its own, not caused by the message.",
	{3, 1}: "The receiving mail system is out of storage space.",
	{3, 2}: "The receiving mail system is not accepting mail at the moment (it may be shutting down or in maintenance).",
	{3, 3}: "The receiving mail system cannot handle a feature the message needs.",
	{3, 4}: "The message is larger than the receiving mail system accepts at all: send a smaller message or share the file another way.",
	{3, 5}: "The receiving mail system is configured wrongly; its administrators must fix it.",
	{3, 6}: "The receiving mail system changed the message's requested priority (RFC 6710).",

	// Network and routing status (RFC 3463 §3.5).
	{4, 0}: "The message could not be routed or carried across the network to the recipient's server.",
	{4, 1}: "The recipient's mail server did not answer.",
	{4, 2}: "The connection to the recipient's mail server failed or was cut off during the transfer.",
	{4, 3}: "A lookup the delivery depends on (usually DNS) failed at the sending side.",
	{4, 4}: "No route to the recipient's mail server was found: the recipient's domain has no usable mail server records in DNS.",
	{4, 5}: "The mail system on the way is overloaded and asked to be tried again later.",
	{4, 6}: "The message went round in a loop between mail servers, usually because of a forwarding or DNS mistake at the recipient's side.",
	{4, 7}: "The message could not be delivered within the time allowed and the mail system gave up trying (the recipient's server was unreachable or kept deferring it).",

	// Mail delivery protocol status (RFC 3463 §3.6).
	{5, 0}: "The sending and receiving servers did not understand each other (a protocol error).",
	{5, 1}: "The receiving server did not accept a command of the sending server.",
	{5, 2}: "The receiving server could not understand a command of the sending server.",
	{5, 3}: "The message had more recipients than the receiving server takes at once.",
	{5, 4}: "The receiving server refused an argument of a command, such as a parameter of the sender or recipient address.",
	{5, 5}: "The sending and receiving servers speak different versions of the mail protocol.",
	{5, 6}: "An authentication exchange line was too long for the server (RFC 4954).",

	// Message content or media status (RFC 3463 §3.7).
	{6, 0}:  "The message's content or format could not be handled by the receiving side.",
	{6, 1}:  "The message contains a kind of content the receiving side does not accept.",
	{6, 2}:  "The message would have had to be converted to be delivered, and the sender forbade conversion.",
	{6, 3}:  "The message would have had to be converted to be delivered, and the mail system cannot convert it.",
	{6, 4}:  "The message was converted on the way in a way that lost some of its content.",
	{6, 5}:  "The message could not be converted to a form the recipient's side accepts.",
	{6, 6}:  "The content the message referred to was not available (RFC 4468).",
	{6, 7}:  "The address contains characters beyond ASCII, which the receiving side does not accept (RFC 6531).",
	{6, 8}:  "The receiving side needed international (UTF-8) text that the sending side cannot handle (RFC 6531).",
	{6, 9}:  "The message has international (UTF-8) headers that cannot be carried to this recipient (RFC 6531).",
	{6, 10}: "The receiving side needed international (UTF-8) text that the sending side cannot handle (RFC 6531).",

	// Security or policy status (RFC 3463 §3.8).
	{7, 0}:  "The message was refused by a security or policy rule.",
	{7, 1}:  "The receiving side refused the message by its policy (the sender or its content is not allowed, often a spam or reputation decision); the server's own message usually says which rule.",
	{7, 2}:  "The sender is not allowed to send to this mailing list.",
	{7, 3}:  "The message would have had to lose its security protection to be delivered, which is not allowed.",
	{7, 4}:  "The receiving side does not support the security features the message needs.",
	{7, 5}:  "A cryptographic step on the way (decryption, a signature or certificate check) failed.",
	{7, 6}:  "The message uses a cryptographic algorithm the receiving side does not support.",
	{7, 7}:  "The message was changed on the way and failed an integrity check.",
	{7, 8}:  "The sending server's login was refused: its user name or password is wrong (RFC 4954).",
	{7, 9}:  "The login method the sending server used is too weak for the receiving server (RFC 4954).",
	{7, 10}: "The receiving server requires an encrypted (TLS) connection for this (RFC 5248).",
	{7, 11}: "The login method needs an encrypted (TLS) connection first (RFC 4954).",
	{7, 12}: "The sending account's password must be changed before it can be used (RFC 4954).",
	{7, 13}: "The sending or receiving account is disabled (RFC 5248).",
	{7, 14}: "The receiving server does not trust the sending server enough for this (RFC 5248).",
	{7, 15}: "The priority the message asked for is not allowed (RFC 6710).",
	{7, 16}: "The message is too large for the priority it asked for (RFC 6710).",
	{7, 17}: "The recipient's mailbox has a new owner since the address was last confirmed (RFC 7293).",
	{7, 18}: "The recipient's domain has a new owner since the address was last confirmed (RFC 7293).",
	{7, 19}: "The receiving side could not check whether the mailbox changed owner (RFC 7293).",
	{7, 20}: "The message carries no valid DKIM signature and the receiving side requires one (RFC 7372).",
	{7, 21}: "The message's DKIM signatures are valid, but none is from a domain the receiving side accepts (RFC 7372).",
	{7, 22}: "No valid DKIM signature on the message is from the author's domain (RFC 7372).",
	{7, 23}: "The sending server is not listed in the sender domain's SPF record, so the message was refused (RFC 7372).",
	{7, 24}: "The sender domain's SPF record could not be checked (it is broken or its DNS failed) (RFC 7372).",
	{7, 25}: "The sending server's IP address has no matching reverse DNS name (RFC 7372).",
	{7, 26}: "The message failed the receiving side's sender authentication checks (SPF, DKIM, DMARC): the sender domain's DNS records or the message's DKIM signature must be fixed (RFC 7372).",
	{7, 27}: "The sender's domain declares that it accepts no mail (a null MX record), so replies could not reach it and the message was refused (RFC 7505).",
	{7, 28}: "The receiving side saw a flood of similar messages and refused this one as part of it.",
	{7, 29}: "The message's ARC authentication chain failed validation (RFC 8617).",
	{7, 30}: "The message required every server on the way to use verified encryption (REQUIRETLS), and a server on the way does not support that (RFC 8689).",
}
