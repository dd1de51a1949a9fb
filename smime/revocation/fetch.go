package revocation

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/mailsec/mailsec"
	"github.com/mailsec/mailsec/internal/netguard"
)

// maxRedirects bounds the redirects one fetch follows.
const maxRedirects = 3

func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("more than %d redirects", maxRedirects)
	}
	if req.URL.Scheme != "http" {
		return fmt.Errorf("redirect to %s refused: HTTP only", req.URL.Redacted())
	}
	return nil
}

// fetch makes one request (a POST of body with contentType, or a GET when
// body is nil) and returns the response body, at most max bytes. Errors
// are *FetchErrors.
func (c *Checker) fetch(ctx context.Context, src Source, u string, body []byte, contentType, accept string, max int64) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	fail := func(err error) error { return &FetchError{Source: src, URL: u, Err: err} }
	method := http.MethodGet
	var rd io.Reader
	if body != nil {
		method, rd = http.MethodPost, bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fail(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", accept)
	c.log.DebugContext(ctx, "revocation fetch", "source", string(src), "url", u)
	resp, err := c.client.Do(req)
	if err != nil {
		if ge, ok := netguard.As(err); ok {
			host := req.URL.Hostname()
			var ue *url.Error
			if errors.As(err, &ue) {
				if p, perr := url.Parse(ue.URL); perr == nil {
					host = p.Hostname() // a redirect's target
				}
			}
			return nil, fail(&mailsec.AddressError{Host: host, Addr: ge.Addr, Reason: ge.Reason})
		}
		return nil, fail(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fail(fmt.Errorf("HTTP %d", resp.StatusCode))
	}
	// The content type is not checked: responders and CRL servers label
	// their answers in many ways, and what counts is that the answer
	// parses and its signature verifies.
	if resp.ContentLength > max {
		return nil, fail(fmt.Errorf("response of %d bytes exceeds the limit of %d", resp.ContentLength, max))
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, fail(err)
	}
	if int64(len(data)) > max {
		return nil, fail(fmt.Errorf("response exceeds the limit of %d bytes", max))
	}
	return data, nil
}
