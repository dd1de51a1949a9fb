package mailsec

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"path"
	"strconv"
	"strings"

	"github.com/mailsec/mailsec/internal/syntax"
)

func attachmentPart(field string, a Attachment, inline bool) (*part, *source, error) {
	if a.Content == nil {
		return nil, nil, invalid(field+".Content", "", "no content reader")
	}
	if isNil(a.Content) {
		// A typed nil (a nil *bytes.Reader, say) would panic when read.
		return nil, nil, invalid(field+".Content", fmt.Sprintf("%T", a.Content), "a nil reader")
	}
	if a.Filename != "" {
		if reason, ok := checkHeaderValue(a.Filename); !ok {
			return nil, nil, invalid(field+".Filename", a.Filename, reason)
		}
		if len(a.Filename) > 255 {
			return nil, nil, invalid(field+".Filename", a.Filename, "longer than 255 octets")
		}
		if strings.ContainsAny(a.Filename, `/\`) {
			return nil, nil, invalid(field+".Filename", a.Filename, "must be a file name, not a path")
		}
	}
	ct := a.ContentType
	if ct == "" {
		ct = mime.TypeByExtension(path.Ext(a.Filename))
		if ct == "" {
			ct = "application/octet-stream"
		}
	}
	mediaType, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return nil, nil, invalid(field+".ContentType", ct, "malformed media type")
	}
	if strings.HasPrefix(mediaType, "multipart/") || strings.HasPrefix(mediaType, "message/") {
		return nil, nil, invalid(field+".ContentType", ct, "multipart and message types cannot be attached as files")
	}
	// Parameter values are header text like any other (as
	// mime.ParseMediaType decoded them, RFC 2231 included): an encoded-word
	// in a name= is one a receiver may decode into a line break or another
	// file name, as it would in a Filename.
	for k, v := range params {
		if reason, ok := checkHeaderValue(v); !ok {
			return nil, nil, invalid(field+".ContentType", ct, "parameter "+k+": "+reason)
		}
		if len(k)+len(v) > 200 {
			return nil, nil, invalid(field+".ContentType", ct, "parameter "+k+" longer than 200 octets")
		}
	}
	disp := "attachment"
	dparams := map[string]string{}
	if a.Filename != "" {
		params["name"] = a.Filename
		dparams["filename"] = a.Filename
	}
	p := &part{}
	p.header.Set("Content-Type", mime.FormatMediaType(mediaType, params))
	if inline {
		disp = "inline"
		if a.ContentID == "" {
			return nil, nil, invalid(field+".ContentID", "", "inline parts need a ContentID")
		}
	}
	if a.ContentID != "" {
		if reason, ok := checkMessageIDLeft(a.ContentID); !ok {
			return nil, nil, invalid(field+".ContentID", a.ContentID, reason)
		}
		p.header.Set("Content-ID", "<"+a.ContentID+">")
	}
	p.header.Set("Content-Disposition", mime.FormatMediaType(disp, dparams))
	p.header.Set("Content-Transfer-Encoding", "base64")

	src := newSource(a.Content)
	p.leaf = func(w io.Writer) error {
		r, err := src.open()
		if err != nil {
			return fmt.Errorf("mailsec: %s: %w", field, err)
		}
		lw := &lineWrapper{w: w}
		enc := base64.NewEncoder(base64.StdEncoding, lw)
		if _, err := io.Copy(enc, r); err != nil {
			return fmt.Errorf("mailsec: %s: reading content: %w", field, err)
		}
		if err := enc.Close(); err != nil {
			return err
		}
		return lw.end()
	}
	return p, src, nil
}

// checkMessageIDLeft checks a Content-ID: printable ASCII without
// brackets, spaces, quotes or encoded-word syntax.
func checkMessageIDLeft(id string) (string, bool) {
	if !syntax.IsPrintableASCII(id) || strings.ContainsAny(id, `<>"\()[];:,`) || len(id) > 250 {
		return "must be printable ASCII without brackets, quotes or separators", false
	}
	if hasEncodedWord(id) {
		return encodedWordReason, false
	}
	return "", true
}

// lineWrapper breaks base64 output into 76-character lines.
type lineWrapper struct {
	w   io.Writer
	col int
	buf []byte
}

func (l *lineWrapper) Write(p []byte) (int, error) {
	n := len(p)
	l.buf = l.buf[:0]
	for len(p) > 0 {
		room := 76 - l.col
		chunk := min(room, len(p))
		l.buf = append(l.buf, p[:chunk]...)
		p = p[chunk:]
		l.col += chunk
		if l.col == 76 {
			l.buf = append(l.buf, '\r', '\n')
			l.col = 0
		}
	}
	if _, err := l.w.Write(l.buf); err != nil {
		return 0, err
	}
	return n, nil
}

func (l *lineWrapper) end() error {
	if l.col == 0 {
		return nil
	}
	l.col = 0
	_, err := l.w.Write([]byte("\r\n"))
	return err
}

// source is an attachment reader that can be read again from its starting
// offset when it is an io.Seeker.
type source struct {
	r      io.Reader
	seeker io.Seeker
	start  int64
	used   bool
}

func newSource(r io.Reader) *source {
	s := &source{r: r}
	if sk, ok := r.(io.Seeker); ok {
		if off, err := sk.Seek(0, io.SeekCurrent); err == nil {
			s.seeker, s.start = sk, off
		}
	}
	return s
}

var errConsumed = errors.New("attachment reader already consumed by an earlier delivery and cannot seek back")

func (s *source) open() (io.Reader, error) {
	if s.used {
		if s.seeker == nil {
			return nil, errConsumed
		}
		if _, err := s.seeker.Seek(s.start, io.SeekStart); err != nil {
			return nil, err
		}
	}
	s.used = true
	return s.r, nil
}

// checkReplayable fails before any I/O when the message needs n
// deliveries and an attachment can be read only once.
func (p *prepared) checkReplayable(n int) error {
	for i, src := range p.sources {
		if src.seeker == nil {
			return invalid("attachment "+strconv.Itoa(i), "",
				"the message needs "+strconv.Itoa(n)+" deliveries but this attachment's reader cannot seek back; use an io.ReadSeeker (*os.File, *bytes.Reader)")
		}
	}
	return nil
}
