package outboxbench

// Peers returns the peers a run measures, with settings s. River comes
// first: it is the floor the others are divided by. With a sink, the
// outbox follows ([MailsecOutbox]), when s has the outbox's River settings
// (see [Outbox]; otherwise the two would not be compared on the same
// settings), and a pooled Send of the same messages ([PooledSend]), whose
// absolute rate the outbox's delivery is read beside.
func Peers(s Settings, sink *Sink) []Peer {
	peers := []Peer{River(s)}
	if sink != nil && s.outboxRiver() {
		peers = append(peers, MailsecOutbox(s, sink))
	}
	if sink != nil {
		peers = append(peers, PooledSend(s, sink))
	}
	return peers
}

// Floor is the name of the peer every ratio divides by.
const Floor = "river"

// Ratioed reports whether a peer's figures are held to the targets as
// ratios to the floor's: the outbox's are; a pooled Send's is an absolute
// figure, for comparison.
func Ratioed(name string) bool { return name != Floor && name != SendPeerName }
