package bounce_test

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/mailsec/mailsec/bounce"
)

// A VERP gives each delivery a signed return path of its own; a bounce
// sent to that address names its delivery even when the reporting server
// dropped the ENVID.
func ExampleVERP() {
	v := &bounce.VERP{
		Local:  "bounces",
		Domain: "example.com",
		Secret: bytes.Repeat([]byte{7}, 32), // in production: 32 random bytes, kept secret
	}
	if err := v.Check(); err != nil {
		fmt.Println(err)
		return
	}
	envid := "tzrn5rzkhptyvsdyzs4xyzqlue.qrpbn24gg5r6c72hxx7a"
	rp, err := v.ReturnPath(envid) // give it to the Sender: mailsec.Options.ReturnPath
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(rp)

	// A bounce arrives at rp: Parse reads the tag, Signs checks it
	// against the delivery its Ref names.
	tag, err := v.Parse("<" + rp + ">")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("ref:", tag.Ref)
	fmt.Println("signs its delivery:", tag.Signs(envid))
	fmt.Println("signs another:", tag.Signs("tzrn5rzkhptyvsdyzs4xyzqlue.other"))

	// A tag made up by someone without the Secret reads, but signs
	// nothing; an address of another shape does not even read.
	forged, err := v.Parse("bounces+tzrn5rzkhptyvsdyzs4xyzqlue.aaaaaaaaaaaaaaaa@example.com")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("made-up tag signs its delivery:", forged.Signs(envid))
	_, err = v.Parse("bounces@example.com")
	fmt.Println("no tag:", errors.Is(err, bounce.ErrForged))
	// Output:
	// bounces+tzrn5rzkhptyvsdyzs4xyzqlue.j4keescorjycia26@example.com
	// ref: tzrn5rzkhptyvsdyzs4xyzqlue
	// signs its delivery: true
	// signs another: false
	// made-up tag signs its delivery: false
	// no tag: true
}
