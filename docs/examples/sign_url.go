// Sign a streamsrv URL with the Go standard library only (Go 1.13+).
//
//	SIGNING_SECRET='example-url-signing-key-current-0123456789abcdef' \
//	BASE_URL='https://media.example.com' \
//	go run sign_url.go 2025-06 '/stream/jazz/So What.flac' +3600 format=mp3 bitrate=320
//
// Arguments: KID PATH EXPIRES [NAME=VALUE ...]
//
//	KID         key id sent as `kid` ('' sends none: then only the server's current key verifies)
//	PATH        the request path, decoded ('/stream/jazz/So What.mp3', not So%20What)
//	EXPIRES     Unix seconds, or +SECONDS from now
//	NAME=VALUE  parameters to bind (format, bitrate, uid, ip, download, ...), decoded
//
// Environment: SIGNING_SECRET (as in STREAMSRV_URL_SIGNING_KEYS: the text, or base64:...),
// BASE_URL (optional; without it a relative URL is printed).
// Prints the URL. See docs/api/authentication.md for the scheme and the test vectors.
//
// url.PathEscape and url.QueryEscape are not used: they leave some sub-delimiters
// unencoded and QueryEscape writes a space as '+'; streamsrv's signers encode
// everything but A-Z a-z 0-9 - . _ ~ (and '/' in the path).
package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

func secretBytes(secret string) ([]byte, error) {
	if strings.HasPrefix(secret, "base64:") {
		// Standard or URL-safe alphabet, padding optional.
		data := strings.TrimSpace(strings.TrimPrefix(secret, "base64:"))
		data = strings.NewReplacer("-", "+", "_", "/").Replace(data)
		return base64.RawStdEncoding.DecodeString(strings.TrimRight(data, "="))
	}
	return []byte(secret), nil
}

func encode(text string, keepSlash bool) string {
	var b strings.Builder
	for _, c := range []byte(text) {
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9',
			c == '-', c == '.', c == '_', c == '~', keepSlash && c == '/':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// SignURL returns baseURL + encoded path + "?" + bound params, expires, kid, sig.
func SignURL(baseURL, kid string, secret []byte, path string, expires int64, bound map[string]string) string {
	names := make([]string, 0, len(bound))
	for name := range bound {
		names = append(names, name)
	}
	sort.Strings(names) // byte-wise: UTF-8 byte order
	message := strconv.FormatInt(expires, 10) + "\n" + path
	for _, name := range names {
		message += "\n" + name + "=" + bound[name]
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(message))
	sig := base64.RawURLEncoding.EncodeToString(mac.Sum(nil))

	var query []string
	for _, name := range names {
		query = append(query, encode(name, false)+"="+encode(bound[name], false))
	}
	query = append(query, "expires="+strconv.FormatInt(expires, 10))
	if kid != "" {
		query = append(query, "kid="+encode(kid, false))
	}
	query = append(query, "sig="+sig)
	return strings.TrimRight(baseURL, "/") + encode(path, true) + "?" + strings.Join(query, "&")
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func main() {
	secretText, haveSecret := os.LookupEnv("SIGNING_SECRET")
	if len(os.Args) < 4 || !haveSecret {
		fail("usage: SIGNING_SECRET=... [BASE_URL=...] go run sign_url.go KID PATH EXPIRES [NAME=VALUE ...]")
	}
	kid, path, expiresArg := os.Args[1], os.Args[2], os.Args[3]
	expires, err := strconv.ParseInt(strings.TrimPrefix(expiresArg, "+"), 10, 64)
	if err != nil || expires < 0 {
		fail("EXPIRES must be Unix seconds or +SECONDS, got %q", expiresArg)
	}
	if strings.HasPrefix(expiresArg, "+") {
		expires += time.Now().Unix()
	}
	bound := map[string]string{}
	for _, item := range os.Args[4:] {
		at := strings.IndexByte(item, '=')
		if at < 0 {
			fail("bad parameter: %q", item)
		}
		name := item[:at]
		if _, seen := bound[name]; seen || name == "expires" || name == "kid" || name == "sig" {
			fail("bad or repeated parameter: %q", item)
		}
		bound[name] = item[at+1:]
	}
	bad := !strings.HasPrefix(path, "/") || strings.Contains(path, "\n")
	for name, value := range bound {
		bad = bad || strings.Contains(name, "\n") || strings.Contains(value, "\n")
	}
	if bad {
		fail("PATH must start with / and nothing may contain a line feed")
	}
	secret, err := secretBytes(secretText)
	if err != nil {
		fail("SIGNING_SECRET: bad base64")
	}
	fmt.Println(SignURL(os.Getenv("BASE_URL"), kid, secret, path, expires, bound))
}
