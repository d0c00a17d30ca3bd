package main

// These tests speak to the emulator over HTTP the way object_store 0.14's GCS client does: XML
// API URLs with the bucket and object percent-encoded (every byte but letters and digits),
// preconditions in x-goog-if-generation-match, and the ETag, x-goog-generation,
// Last-Modified, Content-Length and XML bodies it reads back.

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const bucket = "cairn-test"

// forEachBackend runs f against a fresh emulator (with bucket created) on each backend.
func forEachBackend(t *testing.T, f func(t *testing.T, s server)) {
	for _, fs := range []bool{false, true} {
		t.Run(map[bool]string{false: "memory", true: "filesystem"}[fs], func(t *testing.T) {
			root := ""
			if fs {
				root = t.TempDir()
			}
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			e, err := newEmulator(l.Addr().String(), root)
			if err != nil {
				t.Fatal(err)
			}
			ts := httptest.NewUnstartedServer(e)
			ts.Listener.Close()
			ts.Listener = l
			ts.Start()
			t.Cleanup(ts.Close)
			s := server{t, ts.URL}
			s.want(s.do("POST", "/storage/v1/b", []byte(`{"name":"`+bucket+`"}`), "Content-Type", "application/json"), 200)
			f(t, s)
		})
	}
}

type server struct {
	t    *testing.T
	base string
}

type response struct {
	*http.Response
	body []byte
}

// enc percent-encodes as object_store does.
func enc(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9') {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func obj(key string) string { return "/" + enc(bucket) + "/" + enc(key) }

// do sends a request; header holds name, value pairs.
func (s server) do(method, path string, body []byte, header ...string) response {
	s.t.Helper()
	req, err := http.NewRequest(method, s.base+path, bytes.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	for i := 0; i < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	return response{resp, data}
}

func (s server) want(r response, status int) response {
	s.t.Helper()
	if r.StatusCode != status {
		s.t.Fatalf("%s %s: status %d, want %d; body %s", r.Request.Method, r.Request.URL, r.StatusCode, status, r.body)
	}
	return r
}

// put writes an object as object_store does and returns the ETag and generation it answered.
func (s server) put(key string, body []byte, header ...string) (etag, generation string) {
	s.t.Helper()
	r := s.want(s.do("PUT", obj(key), body, header...), 200)
	return s.writeResult(r)
}

// writeResult checks the headers object_store needs from a write.
func (s server) writeResult(r response) (etag, generation string) {
	s.t.Helper()
	etag, generation = r.Header.Get("ETag"), r.Header.Get("X-Goog-Generation")
	if !regexp.MustCompile(`^"[^"]+"$`).MatchString(etag) {
		s.t.Fatalf("write answered ETag %q, want a quoted value", etag)
	}
	if g, err := strconv.ParseInt(generation, 10, 64); err != nil || g <= 0 {
		s.t.Fatalf("write answered x-goog-generation %q, want a positive integer", generation)
	}
	return etag, generation
}

func (s server) wantContent(key string, content []byte) response {
	s.t.Helper()
	r := s.want(s.do("GET", obj(key), nil), 200)
	if !bytes.Equal(r.body, content) {
		s.t.Fatalf("%s holds %d bytes %.40q, want %d bytes %.40q", key, len(r.body), r.body, len(content), content)
	}
	return r
}

func wantCode(t *testing.T, r response, code string) {
	t.Helper()
	if !bytes.Contains(r.body, []byte("<Code>"+code+"</Code>")) {
		t.Fatalf("error body %s, want code %s", r.body, code)
	}
}

func TestPutCreateOnlyAndOverwrite(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s server) {
		key := "jobs/wc/chk-1/state 1+2=3.bin"
		_, gen1 := s.put(key, []byte("one"), "x-goog-if-generation-match", "0")
		wantCode(t, s.want(s.do("PUT", obj(key), []byte("two"), "x-goog-if-generation-match", "0"), 412), "PreconditionFailed")
		s.wantContent(key, []byte("one"))

		_, gen2 := s.put(key, []byte("three"))
		if gen2 == gen1 {
			t.Fatalf("overwrite kept generation %s", gen1)
		}
		s.wantContent(key, []byte("three"))

		// An update must name the current generation.
		s.want(s.do("PUT", obj(key), []byte("stale"), "x-goog-if-generation-match", gen1), 412)
		s.put(key, []byte("four"), "x-goog-if-generation-match", gen2)
		s.wantContent(key, []byte("four"))
		// To a missing bucket.
		s.want(s.do("PUT", "/nobucket/"+enc(key), []byte("x")), 404)

		// Racing create-only writes: exactly one wins.
		statuses := make(chan int, 8)
		for i := range cap(statuses) {
			go func() {
				req, _ := http.NewRequest("PUT", s.base+obj("race"), strings.NewReader(strconv.Itoa(i)))
				req.Header.Set("x-goog-if-generation-match", "0")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					statuses <- 0
					return
				}
				resp.Body.Close()
				statuses <- resp.StatusCode
			}()
		}
		counts := map[int]int{}
		for range cap(statuses) {
			counts[<-statuses]++
		}
		if counts[200] != 1 || counts[412] != cap(statuses)-1 {
			t.Fatalf("racing create-only writes answered %v, want one 200 and the rest 412", counts)
		}
	})
}

func TestGetHeadRange(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s server) {
		key, content := "a/b.txt", []byte("0123456789abcdef")
		etag, gen := s.put(key, content, "Content-Type", "text/plain", "x-goog-meta-job", "wc")
		for _, method := range []string{"GET", "HEAD"} {
			r := s.want(s.do(method, obj(key), nil), 200)
			if method == "GET" && !bytes.Equal(r.body, content) || method == "HEAD" && len(r.body) != 0 {
				t.Fatalf("%s answered body %q", method, r.body)
			}
			if got := r.Header.Get("Content-Length"); got != strconv.Itoa(len(content)) {
				t.Fatalf("%s Content-Length %q, want %d", method, got, len(content))
			}
			if r.Header.Get("ETag") != etag || r.Header.Get("X-Goog-Generation") != gen {
				t.Fatalf("%s ETag %q generation %q, want %q %q (as the put answered)", method, r.Header.Get("ETag"), r.Header.Get("X-Goog-Generation"), etag, gen)
			}
			modified, err := http.ParseTime(r.Header.Get("Last-Modified"))
			if err != nil || time.Since(modified).Abs() > time.Minute {
				t.Fatalf("%s Last-Modified %q (%v)", method, r.Header.Get("Last-Modified"), err)
			}
			if r.Header.Get("Content-Type") != "text/plain" || r.Header.Get("X-Goog-Meta-Job") != "wc" {
				t.Fatalf("%s lost attributes: %v", method, r.Header)
			}
		}
		r := s.want(s.do("GET", obj(key), nil, "Range", "bytes=3-9"), 206)
		if string(r.body) != "3456789" || r.Header.Get("Content-Range") != "bytes 3-9/16" {
			t.Fatalf("range answered %q with Content-Range %q", r.body, r.Header.Get("Content-Range"))
		}
		s.want(s.do("GET", obj("a/missing"), nil), 404)
		s.want(s.do("HEAD", obj("a/missing"), nil), 404)

		// Content-Encoding is an attribute: the stored bytes are what was sent.
		s.put("a/b.gz", gzipped(content), "Content-Encoding", "gzip")
		s.wantGzip("a/b.gz", gzipped(content))
	})
}

type listResult struct {
	Contents []struct {
		Key          string
		Size         int
		LastModified time.Time
		ETag         string
	}
	CommonPrefixes []struct{ Prefix string }
}

func (s server) list(query string) (keys, prefixes []string) {
	s.t.Helper()
	var l listResult
	r := s.want(s.do("GET", "/"+enc(bucket)+"?list-type=2&"+query, nil), 200)
	if err := xml.Unmarshal(r.body, &l); err != nil {
		s.t.Fatalf("list answered %s: %v", r.body, err)
	}
	for _, c := range l.Contents {
		if c.Size != len(c.Key) || c.LastModified.IsZero() || c.ETag == "" {
			s.t.Fatalf("list entry %+v: wrong size, no time or no ETag", c)
		}
		keys = append(keys, c.Key)
	}
	for _, p := range l.CommonPrefixes {
		prefixes = append(prefixes, p.Prefix)
	}
	slices.Sort(keys)
	slices.Sort(prefixes)
	return keys, prefixes
}

func TestList(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s server) {
		for _, key := range []string{"dir/a", "dir/sub/b", "dirt", "other/c"} {
			s.put(key, []byte(key)) // sized as its name, which list checks
		}
		if keys, _ := s.list("prefix=dir/"); !slices.Equal(keys, []string{"dir/a", "dir/sub/b"}) {
			t.Fatalf("prefix dir/ lists %q", keys)
		}
		keys, prefixes := s.list("prefix=dir/&delimiter=/")
		if !slices.Equal(keys, []string{"dir/a"}) || !slices.Equal(prefixes, []string{"dir/sub/"}) {
			t.Fatalf("prefix dir/, delimiter / lists %q and prefixes %q", keys, prefixes)
		}
		if keys, _ := s.list(""); len(keys) != 4 {
			t.Fatalf("whole bucket lists %q", keys)
		}
	})
}

// initiate starts a multipart upload and returns its id.
func (s server) initiate(key string, header ...string) string {
	s.t.Helper()
	var res struct{ UploadId string }
	r := s.want(s.do("POST", obj(key)+"?uploads", nil, header...), 200)
	if err := xml.Unmarshal(r.body, &res); err != nil || res.UploadId == "" {
		s.t.Fatalf("initiate answered %s (%v)", r.body, err)
	}
	return res.UploadId
}

func (s server) putPart(key, id string, n int, data []byte) string {
	s.t.Helper()
	r := s.want(s.do("PUT", fmt.Sprintf("%s?partNumber=%d&uploadId=%s", obj(key), n, id), data), 200)
	if r.Header.Get("ETag") == "" {
		s.t.Fatalf("part %d answered no ETag", n)
	}
	return r.Header.Get("ETag")
}

// completeBody lists parts (ETags by part number, from 1) as object_store does.
func completeBody(etags ...string) []byte {
	var b strings.Builder
	b.WriteString("<CompleteMultipartUpload>")
	for i, etag := range etags {
		fmt.Fprintf(&b, "<Part><ETag>%s</ETag><PartNumber>%d</PartNumber></Part>", etag, i+1)
	}
	b.WriteString("</CompleteMultipartUpload>")
	return []byte(b.String())
}

func TestMultipartRoundTrip(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s server) {
		key := "jobs/wc/chk-2/big.sst"
		var parts [][]byte
		for _, size := range []int{2 << 20, 2 << 20, 700 << 10} {
			parts = append(parts, random(size))
		}
		id := s.initiate(key, "Content-Type", "application/x-test", "x-goog-meta-job", "wc")
		etags := make([]string, len(parts))
		for _, i := range []int{2, 0, 1} { // out of order, as concurrent uploads may be
			etags[i] = s.putPart(key, id, i+1, parts[i])
		}
		s.want(s.do("HEAD", obj(key), nil), 404) // invisible until completed

		r := s.want(s.do("POST", obj(key)+"?uploadId="+id, completeBody(etags...)), 200)
		_, gen := s.writeResult(response{r.Response, nil})
		var res struct{ ETag string }
		if err := xml.Unmarshal(r.body, &res); err != nil || res.ETag == "" {
			t.Fatalf("complete answered %s (%v)", r.body, err)
		}
		got := s.wantContent(key, bytes.Join(parts, nil))
		if got.Header.Get("ETag") != res.ETag || got.Header.Get("X-Goog-Generation") != gen {
			t.Fatalf("object has ETag %q generation %q, complete answered %q %q", got.Header.Get("ETag"), got.Header.Get("X-Goog-Generation"), res.ETag, gen)
		}
		if got.Header.Get("Content-Type") != "application/x-test" || got.Header.Get("X-Goog-Meta-Job") != "wc" {
			t.Fatalf("object lost the attributes sent at initiation: %v", got.Header)
		}
		// The upload is gone.
		s.want(s.do("PUT", obj(key)+"?partNumber=1&uploadId="+id, []byte("x")), 404)
	})
}

func TestMultipartFailures(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s server) {
		key := "m/key"
		id := s.initiate(key)
		e1, e2 := s.putPart(key, id, 1, []byte("hello ")), s.putPart(key, id, 2, []byte("world"))
		wantCode(t, s.want(s.do("POST", obj(key)+"?uploadId="+id, completeBody(e1, `"bad"`)), 400), "InvalidPart")
		swapped := fmt.Sprintf("<CompleteMultipartUpload><Part><ETag>%s</ETag><PartNumber>2</PartNumber></Part>"+
			"<Part><ETag>%s</ETag><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>", e2, e1)
		wantCode(t, s.want(s.do("POST", obj(key)+"?uploadId="+id, []byte(swapped)), 400), "InvalidPartOrder")
		s.want(s.do("POST", obj("m/other")+"?uploadId="+id, completeBody(e1, e2)), 404) // another object's id
		s.want(s.do("HEAD", obj(key), nil), 404)
		// Abort drops the upload.
		s.want(s.do("DELETE", obj(key)+"?uploadId="+id, nil), 204)
		s.want(s.do("POST", obj(key)+"?uploadId="+id, completeBody(e1, e2)), 404)
		s.want(s.do("DELETE", obj(key)+"?uploadId="+id, nil), 404)

		// A precondition sent at initiation applies at completion.
		s.put(key, []byte("first"))
		id = s.initiate(key, "x-goog-if-generation-match", "0")
		e1 = s.putPart(key, id, 1, []byte("second"))
		s.want(s.do("POST", obj(key)+"?uploadId="+id, completeBody(e1)), 412)
		s.wantContent(key, []byte("first"))
		id = s.initiate("m/new", "x-goog-if-generation-match", "0")
		s.want(s.do("POST", obj("m/new")+"?uploadId="+id, completeBody(s.putPart("m/new", id, 1, []byte("new")))), 200)
		s.wantContent("m/new", []byte("new"))

		s.want(s.do("POST", "/nobucket/"+enc(key)+"?uploads", nil), 404)
	})
}

func TestCopy(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s server) {
		source := func(key string) string { return enc(bucket) + "/" + enc(key) }
		s.put("src/a", []byte("payload a"), "Content-Type", "text/x-a")
		s.put("src/b", []byte("payload b"))

		s.writeResult(s.want(s.do("PUT", obj("dst/1"), nil, "x-goog-copy-source", source("src/a")), 200))
		s.wantContent("dst/1", []byte("payload a"))
		// Copy if not exists: refused onto an existing object, which stays.
		wantCode(t, s.want(s.do("PUT", obj("dst/1"), nil, "x-goog-copy-source", source("src/b"), "x-goog-if-generation-match", "0"), 412), "PreconditionFailed")
		s.wantContent("dst/1", []byte("payload a"))
		s.writeResult(s.want(s.do("PUT", obj("dst/2"), nil, "x-goog-copy-source", source("src/a"), "x-goog-if-generation-match", "0"), 200))
		if r := s.wantContent("dst/2", []byte("payload a")); r.Header.Get("Content-Type") != "text/x-a" {
			t.Fatalf("conditional copy lost Content-Type: %q", r.Header.Get("Content-Type"))
		}
		// A plain copy overwrites.
		s.want(s.do("PUT", obj("dst/1"), nil, "x-goog-copy-source", source("src/b")), 200)
		s.wantContent("dst/1", []byte("payload b"))
		s.want(s.do("PUT", obj("dst/3"), nil, "x-goog-copy-source", source("src/missing")), 404)
		s.want(s.do("PUT", obj("dst/3"), nil, "x-goog-copy-source", source("src/missing"), "x-goog-if-generation-match", "0"), 404)
		s.want(s.do("GET", obj("dst/3"), nil), 404)
		// Stored bytes are copied, not decompressed ones.
		s.put("src/gz", gzipped([]byte("payload gz")), "Content-Encoding", "gzip")
		s.want(s.do("PUT", obj("dst/gz"), nil, "x-goog-copy-source", source("src/gz"), "x-goog-if-generation-match", "0"), 200)
		s.wantGzip("dst/gz", gzipped([]byte("payload gz")))
	})
}

func TestDelete(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s server) {
		s.put("d/x", []byte("x"))
		if r := s.do("DELETE", obj("d/x"), nil); r.StatusCode/100 != 2 {
			t.Fatalf("delete answered %d %s", r.StatusCode, r.body)
		}
		s.want(s.do("GET", obj("d/x"), nil), 404)
		s.want(s.do("DELETE", obj("d/x"), nil), 404)
	})
}

func gzipped(data []byte) []byte {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write(data)
	w.Close()
	return b.Bytes()
}

// wantGzip checks key holds gz stored with Content-Encoding: gzip.
func (s server) wantGzip(key string, gz []byte) {
	s.t.Helper()
	r := s.want(s.do("GET", obj(key), nil, "Accept-Encoding", "gzip"), 200)
	if !bytes.Equal(r.body, gz) || r.Header.Get("Content-Encoding") != "gzip" {
		s.t.Fatalf("%s holds %q with Content-Encoding %q, want %q with gzip", key, r.body, r.Header.Get("Content-Encoding"), gz)
	}
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}
