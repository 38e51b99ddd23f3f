// Command go-backend shows how a Go backend hands out streamsrv credentials:
// an HS256 access token (JWT) for API calls and the WebSocket, and a signed
// URL for <audio src>, both with the Go standard library only.
//
//	STREAMSRV_JWT_SECRET=... STREAMSRV_URL_SIGNING_KEY=kid:secret \
//	  go run . -sub alice -role listener -track "jazz/So What.mp3"
//
// With -listen it serves GET /playback?track=... returning JSON, the way a real
// backend would after checking its own session.
package main

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

var b64 = base64.RawURLEncoding

// NewFamily returns a fresh refresh-token family id (the fam claim): one per
// login session, set on the session's first access token and on its first
// refresh token, so that when streamsrv sees a spent refresh token presented
// again it revokes the family's access tokens too, the one minted here included.
func NewFamily() (string, error) {
	fam := make([]byte, 16)
	if _, err := rand.Read(fam); err != nil {
		return "", err
	}
	return b64.EncodeToString(fam), nil
}

// MintAccessToken returns an HS256 access token streamsrv accepts: sub, roles,
// typ, iat, exp, a random jti and the session's fam. Add iss/aud when streamsrv
// is configured with STREAMSRV_JWT_ISSUER/STREAMSRV_JWT_AUDIENCE.
func MintAccessToken(secret []byte, sub string, roles []string, fam string, ttl time.Duration, now time.Time) (string, error) {
	return mintToken(secret, sub, roles, "access", fam, ttl, now)
}

// MintRefreshToken returns the first refresh token of a session (typ
// "refresh", with the session's fam). The frontend trades it at
// POST /api/v1/auth/refresh for fresh access tokens; each trade rotates it
// (streamsrv keeps the fam), and presenting a spent one again revokes the whole
// family: every refresh and access token carrying that fam.
func MintRefreshToken(secret []byte, sub string, roles []string, fam string, ttl time.Duration, now time.Time) (string, error) {
	return mintToken(secret, sub, roles, "refresh", fam, ttl, now)
}

func mintToken(secret []byte, sub string, roles []string, typ string, fam string, ttl time.Duration, now time.Time) (string, error) {
	header, _ := json.Marshal(map[string]string{"alg": "HS256", "typ": "JWT"})
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", err
	}
	claims, err := json.Marshal(map[string]any{
		"sub":   sub,
		"roles": roles,
		"typ":   typ,
		"fam":   fam,
		"iat":   now.Unix(),
		"exp":   now.Add(ttl).Unix(),
		"jti":   b64.EncodeToString(jti),
	})
	if err != nil {
		return "", err
	}
	signingInput := b64.EncodeToString(header) + "." + b64.EncodeToString(claims)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(signingInput))
	return signingInput + "." + b64.EncodeToString(mac.Sum(nil)), nil
}

// SignURL returns base + the percent-encoded path + a query with the bound
// parameters, expires, kid and sig, exactly as streamsrv verifies it:
// sig = base64url(HMAC-SHA256(secret, expires "\n" path ["\n" name "=" value]...)),
// bound parameters sorted by name; path is the decoded request path.
func SignURL(base, path, kid string, secret []byte, expires int64, bound map[string]string) string {
	names := make([]string, 0, len(bound))
	for name := range bound {
		names = append(names, name)
	}
	sort.Strings(names)
	message := strconv.FormatInt(expires, 10) + "\n" + path
	for _, name := range names {
		message += "\n" + name + "=" + bound[name]
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(message))
	sig := b64.EncodeToString(mac.Sum(nil))

	var query []string
	for _, name := range names {
		query = append(query, url.QueryEscape(name)+"="+url.QueryEscape(bound[name]))
	}
	query = append(query, "expires="+strconv.FormatInt(expires, 10), "kid="+url.QueryEscape(kid), "sig="+sig)
	segments := strings.Split(path, "/")
	for i, s := range segments {
		segments[i] = url.PathEscape(s)
	}
	return strings.TrimRight(base, "/") + strings.Join(segments, "/") + "?" + strings.Join(query, "&")
}

type playback struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	StreamURL    string `json:"stream_url"`
	ExpiresIn    int    `json:"expires_in"`
}

func describe(secret []byte, kid string, key []byte, base, sub string, roles []string, track string, now time.Time) (playback, error) {
	fam, err := NewFamily()
	if err != nil {
		return playback{}, err
	}
	token, err := MintAccessToken(secret, sub, roles, fam, 15*time.Minute, now)
	if err != nil {
		return playback{}, err
	}
	refresh, err := MintRefreshToken(secret, sub, roles, fam, 30*24*time.Hour, now)
	if err != nil {
		return playback{}, err
	}
	expires := now.Add(time.Hour).Unix()
	stream := SignURL(base, "/stream/"+track, kid, key, expires, map[string]string{"uid": sub})
	return playback{AccessToken: token, RefreshToken: refresh, StreamURL: stream, ExpiresIn: 900}, nil
}

func main() {
	sub := flag.String("sub", "alice", "the user id (JWT sub, bound as uid)")
	role := flag.String("role", "listener", "role: listener, premium, artist, admin")
	track := flag.String("track", "jazz/So What.mp3", "track path relative to the media root")
	base := flag.String("base", "http://127.0.0.1:8080", "streamsrv base URL")
	listen := flag.String("listen", "", "serve GET /playback?track= on this address instead of printing")
	flag.Parse()

	secret := []byte(os.Getenv("STREAMSRV_JWT_SECRET"))
	kid, key, ok := strings.Cut(os.Getenv("STREAMSRV_URL_SIGNING_KEY"), ":")
	if len(secret) == 0 || !ok {
		log.Fatal("set STREAMSRV_JWT_SECRET and STREAMSRV_URL_SIGNING_KEY=kid:secret (the same values streamsrv has)")
	}
	if *listen == "" {
		p, err := describe(secret, kid, []byte(key), *base, *sub, []string{*role}, *track, time.Now())
		if err != nil {
			log.Fatal(err)
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(p); err != nil {
			log.Fatal(err)
		}
		return
	}
	http.HandleFunc("/playback", func(w http.ResponseWriter, r *http.Request) {
		// A real backend checks its own session here and looks the user up.
		p, err := describe(secret, kid, []byte(key), *base, *sub, []string{*role}, r.URL.Query().Get("track"), time.Now())
		if err != nil {
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(p)
	})
	log.Fatal(http.ListenAndServe(*listen, nil))
}
