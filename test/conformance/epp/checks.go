package epp

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"tessera.dev/conformance/report"
)

const tier = 1
const extProcService = "envoy.service.ext_proc.v3.ExternalProcessor"

func chat(system, user string) []byte {
	b, _ := json.Marshal(map[string]any{"model": "m", "messages": []map[string]string{{"role": "system", "content": system}, {"role": "user", "content": user}}})
	return b
}

func completion(prompt string) []byte {
	b, _ := json.Marshal(map[string]any{"model": "m", "prompt": prompt, "max_tokens": 4})
	return b
}

type rig struct {
	repo    string
	servers []*ModelServer
	addrs   []string
	picker  *Picker
	conn    *grpc.ClientConn
	proc    extprocv3.ExternalProcessorClient
	health  healthpb.HealthClient
}

// Main runs every check against one `tessera epp` over four model servers; true when any failed.
func Main(ctx context.Context, args []string) bool {
	fs := flag.NewFlagSet("epp", flag.ExitOnError)
	repo := fs.String("repo", ".", "Tessera checkout (built)")
	_ = fs.Parse(args)
	failed := false
	check := func(name string, fn func(context.Context, *rig) error, r *rig) {
		c, cancel := waitCtx(ctx, 60*time.Second)
		defer cancel()
		if !report.Check(tier, "epp/"+name, fn(c, r)) {
			failed = true
		}
	}
	r := &rig{repo: *repo}
	for range 4 {
		m, err := StartModelServer()
		if err != nil {
			report.Fail(tier, "epp/setup", "model server: %v", err)
			return true
		}
		defer m.Close()
		r.servers = append(r.servers, m)
		r.addrs = append(r.addrs, m.Addr)
	}
	p, err := StartPicker(*repo, r.addrs)
	if err != nil {
		report.Fail(tier, "epp/setup", "%v", err)
		return true
	}
	r.picker = p
	defer func() {
		if err := p.Stop(); err != nil {
			report.Fail(tier, "epp/stop", "SIGTERM: %v", err)
		} else {
			report.Pass(tier, "epp/stop: SIGTERM ends tessera epp with exit 0")
		}
	}()
	r.conn, err = grpc.NewClient(p.Target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		report.Fail(tier, "epp/setup", "grpc client: %v", err)
		return true
	}
	defer r.conn.Close()
	r.proc = extprocv3.NewExternalProcessorClient(r.conn)
	r.health = healthpb.NewHealthClient(r.conn)

	check("health: liveness, readiness and the ext_proc service SERVING; unknown NOT_FOUND", checkHealth, r)
	check("header-only GET: decided on the headers, header mutation = envoy.lb metadata", checkHeaderOnly, r)
	check("header-only POST /v1/completions: ImmediateResponse 400", checkHeaderOnlyPost, r)
	check("BUFFERED completions: headers CONTINUE, decision on the body answer", checkBuffered, r)
	check("FULL_DUPLEX_STREAMED chat, 220 KB in 62,000-byte chunks: decided at body end, echoed unchanged", checkFullDuplex, r)
	check("STREAMED body mode refused with INVALID_ARGUMENT", checkStreamedRefused, r)
	check("prefix affinity: one long prefix -> one endpoint (chat and completions), different prefixes spread", checkAffinity, r)
	check("subset hint envoy.lb.subset_hint honoured (list and comma string); no eligible endpoint -> 503", checkSubset, r)
	check("cancelled stream, then a new stream is decided", checkCancel, r)
	check("no ready endpoint: readiness NOT_SERVING and ImmediateResponse 503, then SERVING again", checkNoEndpoints, r)
	check("--fallbacks 2: header and envoy.lb metadata carry primary,fb1,fb2 (distinct pool endpoints)", checkFallbacks, r)
	if !r.picker.Alive() {
		report.Fail(tier, "epp/alive", "tessera epp exited during the checks: %s", r.picker.LogTail())
		failed = true
	}
	return failed
}

func checkHealth(ctx context.Context, r *rig) error {
	for _, svc := range []string{"liveness", "readiness", extProcService} {
		res, err := r.health.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			return fmt.Errorf("Check(%q): %v", svc, err)
		}
		if res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("Check(%q) = %v, want SERVING", svc, res.GetStatus())
		}
	}
	_, err := r.health.Check(ctx, &healthpb.HealthCheckRequest{Service: "no.such.Service"})
	if status.Code(err) != codes.NotFound {
		return fmt.Errorf("Check(unknown service) = %v, want NotFound", err)
	}
	return nil
}

func checkHeaderOnly(ctx context.Context, r *rig) error {
	s, err := r.proc.Process(ctx)
	if err != nil {
		return err
	}
	if err := s.Send(headersMsg("GET", "/v1/models", true, modeFullDuplex, nil)); err != nil {
		return err
	}
	res, err := s.Recv()
	if err != nil {
		return err
	}
	if res.GetRequestHeaders() == nil {
		return fmt.Errorf("answer is %T, want request_headers", res.GetResponse())
	}
	d := decisionOf(res)
	if err := d.consistent(); err != nil {
		return err
	}
	if !slices.Contains(r.addrs, d.header) {
		return fmt.Errorf("destination %q is not one of the pool's endpoints %v", d.header, r.addrs)
	}
	if !d.clearRouteCache {
		return errors.New("clear_route_cache is false: Envoy would keep the route chosen before the header")
	}
	return drain(s)
}

func checkHeaderOnlyPost(ctx context.Context, r *rig) error {
	s, err := r.proc.Process(ctx)
	if err != nil {
		return err
	}
	if err := s.Send(headersMsg("POST", "/v1/completions", true, modeFullDuplex, nil)); err != nil {
		return err
	}
	res, err := s.Recv()
	if err != nil {
		return err
	}
	if got := res.GetImmediateResponse().GetStatus().GetCode(); got != typev3.StatusCode_BadRequest {
		return fmt.Errorf("answer %T with status %v, want ImmediateResponse BadRequest", res.GetResponse(), got)
	}
	return drain(s)
}

func checkBuffered(ctx context.Context, r *rig) error {
	s, err := r.proc.Process(ctx)
	if err != nil {
		return err
	}
	if err := s.Send(headersMsg("POST", "/v1/completions", false, modeBuffered, nil)); err != nil {
		return err
	}
	h, err := s.Recv()
	if err != nil {
		return err
	}
	if h.GetRequestHeaders() == nil || decisionOf(h).header != "" {
		return fmt.Errorf("headers answer = %T with destination %q, want request_headers CONTINUE without a decision", h.GetResponse(), decisionOf(h).header)
	}
	if err := s.Send(bodyMsg(completion(strings.Repeat("buffered prompt ", 40)), true)); err != nil {
		return err
	}
	b, err := s.Recv()
	if err != nil {
		return err
	}
	if b.GetRequestBody() == nil {
		return fmt.Errorf("body answer is %T, want request_body", b.GetResponse())
	}
	d := decisionOf(b)
	if err := d.consistent(); err != nil {
		return err
	}
	if !slices.Contains(r.addrs, d.header) {
		return fmt.Errorf("destination %q not in %v", d.header, r.addrs)
	}
	if b.GetRequestBody().GetResponse().GetBodyMutation() != nil {
		return errors.New("a BUFFERED body answer must not replace the body")
	}
	return drain(s)
}

func checkFullDuplex(ctx context.Context, r *rig) error {
	body := chat(strings.Repeat("You are a careful assistant. ", 200), strings.Repeat("x", 216_000))
	if len(body) <= 220_000 {
		return fmt.Errorf("test body is %d bytes, want > 220,000", len(body))
	}
	res, err := duplex(ctx, r.proc, "/v1/chat/completions", body, maxChunkBytes, nil)
	if err != nil {
		return err
	}
	d := decisionOf(res.first)
	if err := d.consistent(); err != nil {
		return err
	}
	if !slices.Contains(r.addrs, d.header) {
		return fmt.Errorf("destination %q not in %v", d.header, r.addrs)
	}
	if string(res.echoed) != string(body) {
		return fmt.Errorf("echoed body differs: %d bytes back of %d", len(res.echoed), len(body))
	}
	for _, n := range res.chunkLens {
		if n > maxChunkBytes {
			return fmt.Errorf("echoed chunk of %d bytes > 62,000 (%v)", n, res.chunkLens)
		}
	}
	return nil
}

func checkStreamedRefused(ctx context.Context, r *rig) error {
	s, err := r.proc.Process(ctx)
	if err != nil {
		return err
	}
	if err := s.Send(headersMsg("POST", "/v1/completions", false, modeStreamed, nil)); err != nil {
		return err
	}
	_, err = s.Recv()
	if status.Code(err) != codes.InvalidArgument {
		return fmt.Errorf("Recv = %v, want InvalidArgument", err)
	}
	return nil
}

func checkAffinity(ctx context.Context, r *rig) error {
	system := strings.Repeat("Shared system prompt about the company handbook, section and clause. ", 60)
	var chatDest, complDest string
	for i := range 8 {
		got, err := pick(ctx, r.proc, "/v1/chat/completions", chat(system, fmt.Sprintf("question %d about holidays", i)), nil)
		if err != nil {
			return fmt.Errorf("chat %d: %w", i, err)
		}
		if i == 0 {
			chatDest = got
		} else if got != chatDest {
			return fmt.Errorf("chat %d with the same prefix went to %s, the first to %s", i, got, chatDest)
		}
		got, err = pick(ctx, r.proc, "/v1/completions", completion(system+fmt.Sprintf(" completion %d", i)), nil)
		if err != nil {
			return fmt.Errorf("completion %d: %w", i, err)
		}
		if i == 0 {
			complDest = got
		} else if got != complDest {
			return fmt.Errorf("completion %d with the same prefix went to %s, the first to %s", i, got, complDest)
		}
	}
	seen := map[string]int{}
	for i := range 16 {
		got, err := pick(ctx, r.proc, "/v1/completions", completion(fmt.Sprintf("Distinct prefix number %d. ", i)+strings.Repeat(fmt.Sprintf("topic %d ", i), 300)), nil)
		if err != nil {
			return fmt.Errorf("distinct prefix %d: %w", i, err)
		}
		seen[got]++
	}
	if len(seen) < 3 {
		return fmt.Errorf("16 different prefixes went to %d endpoints (%v), want >= 3 of 4", len(seen), seen)
	}
	return nil
}

func checkSubset(ctx context.Context, r *rig) error {
	system := strings.Repeat("A prefix pinned to one endpoint, then restricted by the gateway. ", 60)
	home, err := pick(ctx, r.proc, "/v1/chat/completions", chat(system, "first"), nil)
	if err != nil {
		return err
	}
	var others []string
	for _, a := range r.addrs {
		if a != home {
			others = append(others, a)
		}
	}
	list, _ := structpb.NewList([]any{others[0]})
	got, err := pick(ctx, r.proc, "/v1/chat/completions", chat(system, "second"), subsetMeta(structpb.NewListValue(list)))
	if err != nil {
		return fmt.Errorf("list hint: %w", err)
	}
	if got != others[0] {
		return fmt.Errorf("subset hint [%s] (list) but picked %s (the prefix's home is %s)", others[0], got, home)
	}
	two := others[1] + "," + others[2]
	got, err = pick(ctx, r.proc, "/v1/chat/completions", chat(system, "third"), subsetMeta(structpb.NewStringValue(two)))
	if err != nil {
		return fmt.Errorf("string hint: %w", err)
	}
	if got != others[1] && got != others[2] {
		return fmt.Errorf("subset hint %q (string) but picked %s", two, got)
	}
	res, err := duplex(ctx, r.proc, "/v1/chat/completions", chat(system, "fourth"), maxChunkBytes, subsetMeta(structpb.NewStringValue("192.0.2.1:8000")))
	if err != nil {
		return err
	}
	if c := res.first.GetImmediateResponse().GetStatus().GetCode(); c != typev3.StatusCode_ServiceUnavailable {
		return fmt.Errorf("subset hint naming no pool endpoint: answer %T status %v, want ImmediateResponse 503", res.first.GetResponse(), c)
	}
	return nil
}

func checkCancel(ctx context.Context, r *rig) error {
	cctx, cancel := context.WithCancel(ctx)
	s, err := r.proc.Process(cctx)
	if err != nil {
		cancel()
		return err
	}
	if err := s.Send(headersMsg("POST", "/v1/completions", false, modeFullDuplex, nil)); err != nil {
		cancel()
		return err
	}
	if err := s.Send(bodyMsg([]byte(`{"model":"m","prompt":"half a bo`), false)); err != nil {
		cancel()
		return err
	}
	cancel()
	if _, err := s.Recv(); status.Code(err) != codes.Canceled {
		return fmt.Errorf("Recv on the cancelled stream = %v, want Canceled", err)
	}
	if _, err := pick(ctx, r.proc, "/v1/completions", completion("after the cancel "+strings.Repeat("z", 500)), nil); err != nil {
		return fmt.Errorf("new stream after a cancel: %w", err)
	}
	if !r.picker.Alive() {
		return errors.New("tessera epp exited after a cancelled stream")
	}
	return nil
}

// waitHealth watches a health service until it reports want (the picker re-checks readiness
// on its own poll; Watch pushes the change, no sleeping here).
func waitHealth(ctx context.Context, h healthpb.HealthClient, svc string, want healthpb.HealthCheckResponse_ServingStatus) error {
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	w, err := h.Watch(wctx, &healthpb.HealthCheckRequest{Service: svc})
	if err != nil {
		return err
	}
	var last healthpb.HealthCheckResponse_ServingStatus
	for {
		m, err := w.Recv()
		if err != nil {
			return fmt.Errorf("Watch(%q) ended at %v before %v: %v", svc, last, want, err)
		}
		last = m.GetStatus()
		if last == want {
			return nil
		}
	}
}

func checkNoEndpoints(ctx context.Context, r *rig) error {
	for _, m := range r.servers {
		m.Down.Store(true)
	}
	if err := waitHealth(ctx, r.health, "readiness", healthpb.HealthCheckResponse_NOT_SERVING); err != nil {
		return err
	}
	res, err := r.health.Check(ctx, &healthpb.HealthCheckRequest{Service: extProcService})
	if err != nil || res.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		return fmt.Errorf("Check(%s) with no ready endpoint = %v %v, want NOT_SERVING", extProcService, res.GetStatus(), err)
	}
	if lv, err := r.health.Check(ctx, &healthpb.HealthCheckRequest{Service: "liveness"}); err != nil || lv.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("liveness with no ready endpoint = %v %v, want SERVING (the process is alive)", lv.GetStatus(), err)
	}
	d, err := duplex(ctx, r.proc, "/v1/chat/completions", chat("nobody home", "hello"), maxChunkBytes, nil)
	if err != nil {
		return err
	}
	ir := d.first.GetImmediateResponse()
	if ir.GetStatus().GetCode() != typev3.StatusCode_ServiceUnavailable {
		return fmt.Errorf("answer %T status %v, want ImmediateResponse 503", d.first.GetResponse(), ir.GetStatus().GetCode())
	}
	for _, m := range r.servers {
		m.Down.Store(false)
	}
	if err := waitHealth(ctx, r.health, "readiness", healthpb.HealthCheckResponse_SERVING); err != nil {
		return err
	}
	_, err = pick(ctx, r.proc, "/v1/chat/completions", chat("somebody home again", "hello"), nil)
	return err
}

// checkFallbacks starts a second picker with --fallbacks 2 over the same servers.
func checkFallbacks(ctx context.Context, r *rig) error {
	p, err := StartPicker(r.repo, r.addrs, "--fallbacks", "2")
	if err != nil {
		return err
	}
	defer p.Stop()
	conn, err := grpc.NewClient(p.Target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	proc := extprocv3.NewExternalProcessorClient(conn)
	for _, body := range [][]byte{chat(strings.Repeat("fallback system prompt ", 80), "hello"), completion(strings.Repeat("fallback completion ", 80))} {
		path := "/v1/chat/completions"
		if !strings.Contains(string(body), "messages") {
			path = "/v1/completions"
		}
		got, err := pick(ctx, proc, path, body, nil)
		if err != nil {
			return err
		}
		list := strings.Split(got, ",")
		seen := map[string]bool{}
		for _, e := range list {
			if !slices.Contains(r.addrs, e) || seen[e] {
				return fmt.Errorf("%s: list %q: %q is not a distinct pool endpoint", path, got, e)
			}
			seen[e] = true
		}
		if len(list) != 3 {
			return fmt.Errorf("%s: list %q has %d entries, want 3", path, got, len(list))
		}
	}
	return nil
}
