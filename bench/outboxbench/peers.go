package outboxbench

// Peers returns the peers a run measures, with settings s. River comes
// first: it is the floor the others are divided by. A new peer (the outbox's
// own enqueue and delivery, a pooled Send of the same messages) is added
// here, with the same settings, and every report and benchmark picks it up.
func Peers(s Settings) []Peer {
	return []Peer{River(s)}
}

// Floor is the name of the peer every ratio divides by.
const Floor = "river"
