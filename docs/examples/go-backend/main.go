// Command go-backend shows how a Go backend hands out streamsrv credentials:
// an HS256 access token (JWT) for API calls and the WebSocket, and a signed
// URL for <audio src>, both with the Go standard library only.
//
//	STREAMSRV_JWT_SECRET=... STREAMSRV_URL_SIGNING_KEY=kid:secret \
//	  go run . -sub alice -role listener -track "jazz/So What.mp3"
//
// With -listen it serves GET /playback?track=... returning JSON, the way a real
// backend would after checking its own session.
//
// With -notify TEMPLATE it sends a notification instead (POST
// /api/v1/notifications with an idempotency key, as a service token with the
// notifications:send permission) and follows its deliveries (GET
// /api/v1/notifications/{id}) until each is final or -wait has passed:
//
//	STREAMSRV_JWT_SECRET=... go run . -notify new-release -to alice,bob \
//	  -data '{"artist": "Miles Davis", "album": "Kind of Blue", "track_count": 5, "url": "https://…"}' \
//	  -key release-42
package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
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
	return mintToken(secret, sub, map[string]any{"roles": roles}, "access", fam, ttl, now)
}

// MintServiceToken returns a short-lived access token for the backend itself:
// no role, only the permissions it needs (e.g. "notifications:send"), no fam.
func MintServiceToken(secret []byte, sub string, permissions []string, ttl time.Duration, now time.Time) (string, error) {
	return mintToken(secret, sub, map[string]any{"roles": []string{}, "permissions": permissions}, "access", "", ttl, now)
}

// MintRefreshToken returns the first refresh token of a session (typ
// "refresh", with the session's fam). The frontend trades it at
// POST /api/v1/auth/refresh for fresh access tokens; each trade rotates it
// (streamsrv keeps the fam), and presenting a spent one again revokes the whole
// family: every refresh and access token carrying that fam.
func MintRefreshToken(secret []byte, sub string, roles []string, fam string, ttl time.Duration, now time.Time) (string, error) {
	return mintToken(secret, sub, map[string]any{"roles": roles}, "refresh", fam, ttl, now)
}

func mintToken(secret []byte, sub string, grants map[string]any, typ string, fam string, ttl time.Duration, now time.Time) (string, error) {
	header, _ := json.Marshal(map[string]string{"alg": "HS256", "typ": "JWT"})
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", err
	}
	body := map[string]any{
		"sub": sub,
		"typ": typ,
		"iat": now.Unix(),
		"exp": now.Add(ttl).Unix(),
		"jti": b64.EncodeToString(jti),
	}
	if fam != "" {
		body["fam"] = fam
	}
	for name, value := range grants {
		body[name] = value
	}
	claims, err := json.Marshal(body)
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

// Notification is the body of POST /api/v1/notifications. Leave Channels empty
// for each user's own enabled channels. IdempotencyKey makes the send safe to
// retry (after a timeout, a crash): within 24 hours the same key answers the
// first notification and sends nothing again. Name it after what you notify
// about (e.g. "release-42"), not after the attempt.
type Notification struct {
	Template       string         `json:"template"`
	UserIDs        []string       `json:"user_ids"`
	Data           map[string]any `json:"data"`
	Channels       []string       `json:"channels,omitempty"`
	Priority       string         `json:"priority,omitempty"`
	IdempotencyKey string         `json:"idempotency_key,omitempty"`
}

// Delivery is one (user, channel) of a notification: State is queued,
// deferred (NotBefore: the end of the user's quiet hours), sent, failed
// (LastError) or suppressed (Reason: opted_out, no_address, frequency_cap,
// not_configured).
type Delivery struct {
	UserID    string   `json:"user_id"`
	Channel   string   `json:"channel"`
	State     string   `json:"state"`
	Reason    string   `json:"reason,omitempty"`
	NotBefore *float64 `json:"not_before,omitempty"`
	Attempts  int      `json:"attempts,omitempty"`
	LastError string   `json:"last_error,omitempty"`
	SentAt    *float64 `json:"sent_at,omitempty"`
}

// NotificationState is what both notification routes answer.
type NotificationState struct {
	ID         string     `json:"id"`
	Deliveries []Delivery `json:"deliveries"`
}

// Final reports whether no delivery can change any more.
func (n NotificationState) Final() bool {
	for _, d := range n.Deliveries {
		if d.State == "queued" || d.State == "deferred" {
			return false
		}
	}
	return true
}

// APIError is streamsrv's JSON error: {"error": {"code", "message", "request_id"}}.
type APIError struct {
	Status    int
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
}

func (e *APIError) Error() string {
	return fmt.Sprintf("streamsrv answered %d %s: %s (request %s)", e.Status, e.Code, e.Message, e.RequestID)
}

// SendNotification queues a notification; streamsrv answers 202 only once it
// is durable. A 400 names the bad field (unknown template, a variable the
// template needs and Data lacks, too many users): fix the request, do not retry it.
func SendNotification(client *http.Client, base, token string, n Notification) (NotificationState, error) {
	body, err := json.Marshal(n)
	if err != nil {
		return NotificationState{}, err
	}
	return call(client, http.MethodPost, strings.TrimRight(base, "/")+"/api/v1/notifications", token, body, http.StatusAccepted)
}

// GetNotification reads a notification and the state of each delivery.
func GetNotification(client *http.Client, base, token, id string) (NotificationState, error) {
	target := strings.TrimRight(base, "/") + "/api/v1/notifications/" + url.PathEscape(id)
	return call(client, http.MethodGet, target, token, nil, http.StatusOK)
}

func call(client *http.Client, method, target, token string, body []byte, want int) (NotificationState, error) {
	var state NotificationState
	req, err := http.NewRequest(method, target, bytes.NewReader(body))
	if err != nil {
		return state, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return state, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		var e struct {
			Error APIError `json:"error"`
		}
		if json.NewDecoder(resp.Body).Decode(&e) != nil {
			return state, fmt.Errorf("streamsrv answered %s", resp.Status)
		}
		e.Error.Status = resp.StatusCode
		return state, &e.Error
	}
	err = json.NewDecoder(resp.Body).Decode(&state)
	return state, err
}

// notify sends n as a service token and follows it until every delivery is
// final or wait has passed; it answers the last state read.
func notify(secret []byte, base string, n Notification, wait time.Duration) (NotificationState, error) {
	token, err := MintServiceToken(secret, "backend", []string{"notifications:send"}, 5*time.Minute, time.Now())
	if err != nil {
		return NotificationState{}, err
	}
	client := &http.Client{Timeout: 10 * time.Second}
	state, err := SendNotification(client, base, token, n)
	if err != nil {
		return state, err
	}
	deadline := time.Now().Add(wait)
	for !state.Final() && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		if state, err = GetNotification(client, base, token, state.ID); err != nil {
			return state, err
		}
	}
	return state, nil
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
	template := flag.String("notify", "", "send a notification with this template instead, and follow it")
	to := flag.String("to", "alice", "-notify: the user ids, comma-separated")
	data := flag.String("data", "{}", "-notify: the template's variables, a JSON object")
	key := flag.String("key", "", "-notify: the idempotency key (a retry with it sends nothing again)")
	wait := flag.Duration("wait", 10*time.Second, "-notify: how long to follow the deliveries")
	flag.Parse()

	secret := []byte(os.Getenv("STREAMSRV_JWT_SECRET"))
	if *template != "" {
		if len(secret) == 0 {
			log.Fatal("set STREAMSRV_JWT_SECRET (the same value streamsrv has)")
		}
		n := Notification{Template: *template, UserIDs: strings.Split(*to, ","), IdempotencyKey: *key}
		if err := json.Unmarshal([]byte(*data), &n.Data); err != nil {
			log.Fatalf("-data: %v", err)
		}
		state, err := notify(secret, *base, n, *wait)
		var apiErr *APIError
		if errors.As(err, &apiErr) {
			log.Fatalf("not sent: %v", apiErr)
		} else if err != nil {
			log.Fatal(err)
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(state); err != nil {
			log.Fatal(err)
		}
		return
	}
	kid, signingKey, ok := strings.Cut(os.Getenv("STREAMSRV_URL_SIGNING_KEY"), ":")
	if len(secret) == 0 || !ok {
		log.Fatal("set STREAMSRV_JWT_SECRET and STREAMSRV_URL_SIGNING_KEY=kid:secret (the same values streamsrv has)")
	}
	if *listen == "" {
		p, err := describe(secret, kid, []byte(signingKey), *base, *sub, []string{*role}, *track, time.Now())
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
		p, err := describe(secret, kid, []byte(signingKey), *base, *sub, []string{*role}, r.URL.Query().Get("track"), time.Now())
		if err != nil {
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(p)
	})
	log.Fatal(http.ListenAndServe(*listen, nil))
}
