// Package sqlitedb opens a SQLite database through modernc.org/sqlite with
// connections that keep the statements they have prepared, by their text
// (up to Options.CacheSize each), and run them again without parsing them
// anew.
//
// modernc.org/sqlite prepares every statement given as text on each call,
// and River's SQLite driver sends all its queries as text: on a busy
// queue, parsing River's job insert, fetch and completion took more of
// the one connection's time than running them.
//
// The connections come from the driver registered as "sqlite", with the
// functions, collations and connection hooks registered with it, but they
// are not modernc.org/sqlite's own type: its connection interfaces
// (backups, commit hooks, serialization) are not reachable through
// database/sql's Conn.Raw. Rows tell their column types as that driver's
// do.
package sqlitedb

import (
	"container/list"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"reflect"

	"modernc.org/sqlite"
)

// DefaultCacheSize is Options.CacheSize's default.
const DefaultCacheSize = 64

// Options tune Open. The zero value takes the defaults.
type Options struct {
	// CacheSize is how many prepared statements a connection keeps; the
	// least recently used goes first. Zero means DefaultCacheSize; a
	// negative value keeps none.
	CacheSize int
}

// Open returns a handle on the SQLite database of dsn, a modernc.org/sqlite
// data source name, whose connections cache their statements. Its
// connections come from the driver registered as "sqlite", with the
// functions, collations and hooks registered with it. It opens no
// connection: the first use does. A malformed dsn is an error.
func Open(dsn string, o Options) (*sql.DB, error) {
	inner, err := sqlite.NewConnector(dsn)
	if err != nil {
		return nil, err
	}
	c := &connector{inner: inner, cacheSize: o.CacheSize}
	if c.cacheSize == 0 {
		c.cacheSize = DefaultCacheSize
	}
	return sql.OpenDB(c), nil
}

// connector opens the handle's connections.
type connector struct {
	inner     driver.Connector
	cacheSize int
}

func (c *connector) Connect(ctx context.Context) (driver.Conn, error) {
	dc, err := c.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	inner, ok := dc.(innerConn)
	if !ok {
		_ = dc.Close()
		return nil, errors.New("sqlitedb: the modernc.org/sqlite connection lacks a context-aware method")
	}
	return &conn{inner: inner, max: c.cacheSize, stmts: map[string]*list.Element{}, lru: list.New()}, nil
}

func (c *connector) Driver() driver.Driver { return c.inner.Driver() }

// innerConn is what conn needs of a modernc.org/sqlite connection.
type innerConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
}

// conn is a connection with its statement cache. database/sql never uses
// one connection from two goroutines at once, Rows' Close included, so
// the cache needs no lock.
type conn struct {
	inner innerConn
	max   int
	stmts map[string]*list.Element // of *cached, by text
	lru   *list.List               // front: the most recently used
}

// cached is a prepared statement in a connection's cache. busy says
// that Rows of it are open: a second use of the same text meanwhile
// prepares a statement of its own.
type cached struct {
	text string
	stmt driver.Stmt
	busy bool
}

var (
	_ driver.Conn               = (*conn)(nil)
	_ driver.ConnBeginTx        = (*conn)(nil)
	_ driver.ConnPrepareContext = (*conn)(nil)
	_ driver.ExecerContext      = (*conn)(nil)
	_ driver.QueryerContext     = (*conn)(nil)
	_ driver.Pinger             = (*conn)(nil)
	_ driver.SessionResetter    = (*conn)(nil)
	_ driver.Validator          = (*conn)(nil)
)

func (c *conn) Prepare(query string) (driver.Stmt, error) { return c.inner.Prepare(query) }
func (c *conn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.inner.PrepareContext(ctx, query)
}

// Begin is driver.Conn's; database/sql calls BeginTx.
func (c *conn) Begin() (driver.Tx, error) { return c.BeginTx(context.Background(), driver.TxOptions{}) }

func (c *conn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return c.inner.BeginTx(ctx, opts)
}

func (c *conn) Ping(ctx context.Context) error         { return c.inner.Ping(ctx) }
func (c *conn) ResetSession(ctx context.Context) error { return c.inner.ResetSession(ctx) }
func (c *conn) IsValid() bool                          { return c.inner.IsValid() }

// Close finalizes the cached statements and closes the connection.
func (c *conn) Close() error {
	var errs []error
	for e := c.lru.Front(); e != nil; e = e.Next() {
		errs = append(errs, e.Value.(*cached).stmt.Close())
	}
	c.lru.Init()
	clear(c.stmts)
	return errors.Join(append(errs, c.inner.Close())...)
}

func (c *conn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	s, err := c.take(ctx, query)
	if err != nil {
		return nil, err
	}
	if s == nil {
		return c.inner.ExecContext(ctx, query, args)
	}
	defer func() { s.busy = false }()
	return s.stmt.(driver.StmtExecContext).ExecContext(ctx, args)
}

func (c *conn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	s, err := c.take(ctx, query)
	if err != nil {
		return nil, err
	}
	if s == nil {
		return c.inner.QueryContext(ctx, query, args)
	}
	r, err := s.stmt.(driver.StmtQueryContext).QueryContext(ctx, args)
	if err != nil {
		s.busy = false
		return nil, err
	}
	return &rows{Rows: r, s: s}, nil
}

// take returns query's statement from the cache, prepared now if it was
// not there, marked busy; nil when none is to be used (the cache is off,
// the statement is busy, or the driver's statement cannot run with a
// context).
func (c *conn) take(ctx context.Context, query string) (*cached, error) {
	if c.max <= 0 {
		return nil, nil
	}
	if e, ok := c.stmts[query]; ok {
		s := e.Value.(*cached)
		if s.busy {
			return nil, nil
		}
		c.lru.MoveToFront(e)
		s.busy = true
		return s, nil
	}
	st, err := c.inner.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	_, canExec := st.(driver.StmtExecContext)
	_, canQuery := st.(driver.StmtQueryContext)
	if !canExec || !canQuery {
		_ = st.Close()
		return nil, nil
	}
	// Make room: the least recently used go first, statements whose Rows
	// are open stay.
	for e := c.lru.Back(); e != nil && c.lru.Len() >= c.max; {
		prev := e.Prev()
		if old := e.Value.(*cached); !old.busy {
			c.lru.Remove(e)
			delete(c.stmts, old.text)
			_ = old.stmt.Close()
		}
		e = prev
	}
	s := &cached{text: query, stmt: st, busy: true}
	c.stmts[query] = c.lru.PushFront(s)
	return s, nil
}

// rows are a cached statement's Rows, which give the statement back when
// they close, and tell the column types as modernc.org/sqlite's do.
type rows struct {
	driver.Rows
	s      *cached
	closed bool
}

func (r *rows) Close() error {
	if r.closed {
		return nil // the statement may be another query's by now
	}
	r.closed = true
	err := r.Rows.Close()
	r.s.busy = false
	return err
}

func (r *rows) ColumnTypeDatabaseTypeName(i int) string {
	if t, ok := r.Rows.(driver.RowsColumnTypeDatabaseTypeName); ok {
		return t.ColumnTypeDatabaseTypeName(i)
	}
	return ""
}

func (r *rows) ColumnTypeLength(i int) (int64, bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypeLength); ok {
		return t.ColumnTypeLength(i)
	}
	return 0, false
}

func (r *rows) ColumnTypeNullable(i int) (nullable, ok bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypeNullable); ok {
		return t.ColumnTypeNullable(i)
	}
	return false, false
}

func (r *rows) ColumnTypePrecisionScale(i int) (precision, scale int64, ok bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypePrecisionScale); ok {
		return t.ColumnTypePrecisionScale(i)
	}
	return 0, 0, false
}

func (r *rows) ColumnTypeScanType(i int) reflect.Type {
	if t, ok := r.Rows.(driver.RowsColumnTypeScanType); ok {
		return t.ColumnTypeScanType(i)
	}
	return reflect.TypeFor[any]()
}
