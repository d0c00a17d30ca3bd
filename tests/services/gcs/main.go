// Command gcs-emulator serves Google Cloud Storage on a loopback address for Cairn's tests.
//
// It embeds fake-gcs-server, which keeps the objects and makes every decision (existence,
// generations, preconditions), and adds what the GCS client of the Rust crate object_store
// needs but fake-gcs-server lacks. That client speaks only the XML API, and fake-gcs-server has
// no XML simple upload, copy or multipart upload, nor the x-goog-if-generation-match header.
// Those requests are translated into JSON API requests that fake-gcs-server does have, served
// by its handler in-process; every other request goes to that handler unchanged.
//
//	gcs-emulator -addr 127.0.0.1:4443 -root /tmp/gcs   (empty -root: objects in memory)
package main

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"flag"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/fsouza/fake-gcs-server/fakestorage"
	"github.com/gorilla/handlers"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:4443", "loopback `host:port` to serve on (port 0: any free port)")
	root := flag.String("root", "", "keep buckets and objects under `dir` (empty: in memory)")
	verbose := flag.Bool("v", false, "log every request to stderr")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("gcs-emulator: ")

	// Tests only: refuse to serve anything but this machine.
	host, _, err := net.SplitHostPort(*addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		log.Fatalf("-addr %q: want a loopback IP address and port, such as 127.0.0.1:4443", *addr)
	}
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	e, err := newEmulator(l.Addr().String(), *root)
	if err != nil {
		log.Fatal(err)
	}
	var h http.Handler = e
	if *verbose {
		log.Printf("serving on http://%s", l.Addr())
		h = handlers.LoggingHandler(os.Stderr, h)
	}
	log.Fatal(http.Serve(l, h))
}

// The request header object_store puts its preconditions in (0: the object must not exist).
const generationMatch = "X-Goog-If-Generation-Match"

type emulator struct {
	backend http.Handler // fake-gcs-server's
	host    string       // the address clients use, as in their Host header

	mu      sync.Mutex
	uploads map[string]*upload // XML multipart uploads in progress, by upload id
}

type upload struct {
	bucket, object string
	attrs          http.Header // object attributes sent at initiation
	generation     string      // precondition sent at initiation, applied at completion
	parts          map[int]part
}

type part struct {
	data []byte
	etag string
}

func newEmulator(addr, root string) (*emulator, error) {
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{
		StorageRoot: root,
		Scheme:      "http",
		NoListener:  true,
		// fake-gcs-server routes path-style XML requests (/{bucket}/{object}, bucket lists)
		// only when their Host header is its public host.
		PublicHost:  addr,
		ExternalURL: "http://" + addr,
	})
	if err != nil {
		return nil, err
	}
	return &emulator{backend: srv.HTTPHandler(), host: addr, uploads: map[string]*upload{}}, nil
}

func (e *emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	bucket, object, ok := e.objectPath(r)
	q := r.URL.Query()
	switch {
	case !ok || q.Has("X-Goog-Algorithm"): // not an XML object URL, or a signed URL
		e.backend.ServeHTTP(w, r)
	case r.Method == http.MethodPut && r.Header.Get("X-Goog-Copy-Source") != "":
		e.copy(w, r, bucket, object)
	case r.Method == http.MethodPut && q.Has("uploadId"):
		e.putPart(w, r, bucket, object)
	case r.Method == http.MethodPut:
		e.put(w, r, bucket, object)
	case r.Method == http.MethodPost && q.Has("uploads"):
		e.initiate(w, r, bucket, object)
	case r.Method == http.MethodPost && q.Has("uploadId"):
		e.complete(w, r, bucket, object)
	case r.Method == http.MethodDelete && q.Has("uploadId"):
		e.abort(w, r, bucket, object)
	default: // GET, HEAD and DELETE of objects: fake-gcs-server has them
		e.backend.ServeHTTP(w, r)
	}
}

// objectPath splits a path-style XML API object URL, http://{host}/{bucket}/{object}, both
// parts decoded (object_store percent-encodes every byte but letters and digits, "/" too).
// Paths under fake-gcs-server's JSON API prefixes are not object URLs.
func (e *emulator) objectPath(r *http.Request) (bucket, object string, ok bool) {
	if r.Host != e.host {
		return "", "", false
	}
	bucket, object, ok = splitPath(strings.TrimPrefix(r.URL.EscapedPath(), "/"))
	switch bucket {
	case "storage", "upload", "download", "batch", "_internal":
		return "", "", false
	}
	return bucket, object, ok
}

// splitPath splits "{bucket}/{object}", both percent-encoded, as in x-goog-copy-source.
func splitPath(p string) (bucket, object string, ok bool) {
	b, o, found := strings.Cut(p, "/")
	bucket, err1 := url.PathUnescape(b)
	object, err2 := url.PathUnescape(o)
	return bucket, object, found && bucket != "" && object != "" && err1 == nil && err2 == nil
}

// call serves a request with fake-gcs-server's handler in-process and returns its response.
func (e *emulator) call(ctx context.Context, method, target string, body io.Reader, h http.Header) *httptest.ResponseRecorder {
	req := httptest.NewRequestWithContext(ctx, method, "http://"+e.host+target, body)
	for k, v := range h {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	e.backend.ServeHTTP(rec, req)
	return rec
}

// create writes an object with a JSON API media upload, the one write that fake-gcs-server
// checks an ifGenerationMatch precondition on (atomically, in its backend).
func (e *emulator) create(ctx context.Context, bucket, object string, body io.Reader, attrs http.Header, generation string) *httptest.ResponseRecorder {
	q := url.Values{"uploadType": {"media"}, "name": {object}}
	if generation != "" {
		q.Set("ifGenerationMatch", generation)
	}
	h := attrs.Clone()
	// A media upload takes the encoding as a parameter; as a header fake-gcs-server would
	// decompress the content before storing it.
	if enc := h.Get("Content-Encoding"); enc != "" {
		q.Set("contentEncoding", enc)
		h.Del("Content-Encoding")
	}
	return e.call(ctx, http.MethodPost, "/upload/storage/v1/b/"+url.PathEscape(bucket)+"/o?"+q.Encode(), body, h)
}

// objectAttrs picks the headers of a request (or response) that are object attributes.
func objectAttrs(h http.Header) http.Header {
	attrs := http.Header{}
	for k, v := range h {
		switch k = http.CanonicalHeaderKey(k); k {
		case "Content-Type", "Cache-Control", "Content-Disposition", "Content-Language", "Content-Encoding":
			attrs[k] = v
		default:
			if strings.HasPrefix(k, "X-Goog-Meta-") {
				attrs[k] = v
			}
		}
	}
	return attrs
}

// result reads fake-gcs-server's JSON answer to a write. On success it sets the headers
// object_store reads from XML API writes: the ETag (quoted, as downloads send it) and the
// generation. On failure it answers with fake-gcs-server's status (412 for a failed
// precondition) and an XML error.
func result(w http.ResponseWriter, rec *httptest.ResponseRecorder) (etag string, ok bool) {
	var obj struct {
		Etag       string `json:"etag"`
		Generation string `json:"generation"`
		Error      struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	err := json.Unmarshal(rec.Body.Bytes(), &obj)
	if rec.Code != http.StatusOK {
		xmlError(w, rec.Code, "", obj.Error.Message)
		return "", false
	}
	if err != nil || obj.Etag == "" {
		xmlError(w, http.StatusInternalServerError, "", "unexpected answer from fake-gcs-server: "+rec.Body.String())
		return "", false
	}
	etag = `"` + obj.Etag + `"`
	w.Header().Set("ETag", etag)
	w.Header().Set("X-Goog-Generation", obj.Generation)
	return etag, true
}

// put: a simple upload, PUT /{bucket}/{object}, perhaps with a generation precondition.
func (e *emulator) put(w http.ResponseWriter, r *http.Request, bucket, object string) {
	// Read first: fake-gcs-server's filesystem backend reads the content holding its lock, and
	// on a failed precondition not at all (the client would see its connection closed).
	data, err := io.ReadAll(r.Body)
	if err != nil {
		xmlError(w, http.StatusBadRequest, "IncompleteBody", err.Error())
		return
	}
	rec := e.create(r.Context(), bucket, object, bytes.NewReader(data), objectAttrs(r.Header), r.Header.Get(generationMatch))
	if _, ok := result(w, rec); ok {
		w.WriteHeader(http.StatusOK)
	}
}

// copy: PUT /{bucket}/{object} with x-goog-copy-source: {bucket}/{object}.
func (e *emulator) copy(w http.ResponseWriter, r *http.Request, bucket, object string) {
	srcBucket, srcObject, ok := splitPath(strings.TrimPrefix(r.Header.Get("X-Goog-Copy-Source"), "/"))
	if !ok {
		xmlError(w, http.StatusBadRequest, "InvalidArgument", "bad x-goog-copy-source")
		return
	}
	src := "/b/" + url.PathEscape(srcBucket) + "/o/" + url.PathEscape(srcObject)
	var rec *httptest.ResponseRecorder
	if generation := r.Header.Get(generationMatch); generation == "" {
		dst := "/b/" + url.PathEscape(bucket) + "/o/" + url.PathEscape(object)
		rec = e.call(r.Context(), http.MethodPost, "/storage/v1"+src+"/copyTo"+dst, nil, nil)
	} else {
		// fake-gcs-server's copy ignores preconditions, so a conditional copy is a download
		// (of the stored bytes: gzip is accepted, so not decompressed) and a conditional upload.
		got := e.call(r.Context(), http.MethodGet, "/download/storage/v1"+src, nil, http.Header{"Accept-Encoding": {"gzip"}})
		if got.Code != http.StatusOK {
			xmlError(w, got.Code, "", "copy source "+srcBucket+"/"+srcObject)
			return
		}
		rec = e.create(r.Context(), bucket, object, got.Body, objectAttrs(got.Header()), generation)
	}
	if _, ok := result(w, rec); ok {
		w.WriteHeader(http.StatusOK)
	}
}

// initiate: POST /{bucket}/{object}?uploads starts a multipart upload, kept here in memory.
func (e *emulator) initiate(w http.ResponseWriter, r *http.Request, bucket, object string) {
	// fake-gcs-server decides whether the bucket exists.
	if got := e.call(r.Context(), http.MethodGet, "/storage/v1/b/"+url.PathEscape(bucket), nil, nil); got.Code != http.StatusOK {
		xmlError(w, got.Code, "NoSuchBucket", "bucket "+bucket)
		return
	}
	id := rand.Text()
	e.mu.Lock()
	e.uploads[id] = &upload{bucket, object, objectAttrs(r.Header), r.Header.Get(generationMatch), map[int]part{}}
	e.mu.Unlock()
	writeXML(w, http.StatusOK, struct {
		XMLName  xml.Name `xml:"InitiateMultipartUploadResult"`
		Bucket   string
		Key      string
		UploadID string `xml:"UploadId"`
	}{Bucket: bucket, Key: object, UploadID: id})
}

// lookup finds the upload a request names, which must be of the request's object.
// Call with e.mu held.
func (e *emulator) lookup(r *http.Request, bucket, object string) (string, *upload) {
	id := r.URL.Query().Get("uploadId")
	if u := e.uploads[id]; u != nil && u.bucket == bucket && u.object == object {
		return id, u
	}
	return id, nil
}

// putPart: PUT /{bucket}/{object}?partNumber=N&uploadId=ID; answers the part's ETag.
func (e *emulator) putPart(w http.ResponseWriter, r *http.Request, bucket, object string) {
	n, err := strconv.Atoi(r.URL.Query().Get("partNumber"))
	if err != nil || n < 1 || n > 10000 {
		xmlError(w, http.StatusBadRequest, "InvalidArgument", "partNumber must be 1 to 10000")
		return
	}
	data, err := io.ReadAll(r.Body)
	if err != nil {
		xmlError(w, http.StatusBadRequest, "IncompleteBody", err.Error())
		return
	}
	sum := md5.Sum(data)
	etag := `"` + hex.EncodeToString(sum[:]) + `"`
	e.mu.Lock()
	_, u := e.lookup(r, bucket, object)
	if u != nil {
		u.parts[n] = part{data, etag} // a part sent again replaces the earlier one
	}
	e.mu.Unlock()
	if u == nil {
		xmlError(w, http.StatusNotFound, "NoSuchUpload", "no such upload")
		return
	}
	w.Header().Set("ETag", etag)
	w.WriteHeader(http.StatusOK)
}

// complete: POST /{bucket}/{object}?uploadId=ID with the list of parts. The listed parts,
// in ascending part number order, become the object in one upload to fake-gcs-server.
func (e *emulator) complete(w http.ResponseWriter, r *http.Request, bucket, object string) {
	var list struct {
		Parts []struct {
			PartNumber int
			ETag       string
		} `xml:"Part"`
	}
	if err := xml.NewDecoder(r.Body).Decode(&list); err != nil || len(list.Parts) == 0 {
		xmlError(w, http.StatusBadRequest, "MalformedXML", "want a CompleteMultipartUpload listing parts")
		return
	}
	e.mu.Lock()
	id, u := e.lookup(r, bucket, object)
	if u == nil {
		e.mu.Unlock()
		xmlError(w, http.StatusNotFound, "NoSuchUpload", "no such upload")
		return
	}
	var content []io.Reader
	code := ""
	for i, p := range list.Parts {
		got, found := u.parts[p.PartNumber]
		if i > 0 && p.PartNumber <= list.Parts[i-1].PartNumber {
			code = "InvalidPartOrder"
		} else if !found || strings.Trim(got.etag, `"`) != strings.Trim(p.ETag, `"`) {
			code = "InvalidPart"
		}
		if code != "" {
			break
		}
		content = append(content, bytes.NewReader(got.data))
	}
	e.mu.Unlock()
	if code != "" {
		xmlError(w, http.StatusBadRequest, code, "cannot complete upload "+id)
		return
	}
	etag, ok := result(w, e.create(r.Context(), bucket, object, io.MultiReader(content...), u.attrs, u.generation))
	if !ok {
		return // the parts stay: the client may retry or abort
	}
	e.mu.Lock()
	delete(e.uploads, id)
	e.mu.Unlock()
	writeXML(w, http.StatusOK, struct {
		XMLName  xml.Name `xml:"CompleteMultipartUploadResult"`
		Location string
		Bucket   string
		Key      string
		ETag     string
	}{Location: "http://" + e.host + "/" + url.PathEscape(bucket) + "/" + url.PathEscape(object),
		Bucket: bucket, Key: object, ETag: etag})
}

// abort: DELETE /{bucket}/{object}?uploadId=ID drops the upload and its parts.
func (e *emulator) abort(w http.ResponseWriter, r *http.Request, bucket, object string) {
	e.mu.Lock()
	id, u := e.lookup(r, bucket, object)
	if u != nil {
		delete(e.uploads, id)
	}
	e.mu.Unlock()
	if u == nil {
		xmlError(w, http.StatusNotFound, "NoSuchUpload", "no such upload")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func writeXML(w http.ResponseWriter, status int, v any) {
	body, err := xml.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte("<Error><Code>InternalError</Code></Error>")
	}
	w.Header().Set("Content-Type", "application/xml; charset=UTF-8")
	w.WriteHeader(status)
	w.Write(append([]byte(xml.Header), body...))
}

// xmlError answers with an XML API error; code "" derives it from the status.
func xmlError(w http.ResponseWriter, status int, code, message string) {
	if code == "" {
		code = map[int]string{404: "NoSuchKey", 412: "PreconditionFailed"}[status]
	}
	if code == "" {
		code = strings.ReplaceAll(http.StatusText(status), " ", "")
	}
	writeXML(w, status, struct {
		XMLName xml.Name `xml:"Error"`
		Code    string
		Message string
	}{Code: code, Message: message})
}
