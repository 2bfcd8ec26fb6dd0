package epp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// The names of the Inference Extension's protocol, written here from its spec (not imported
// from Tessera: the harness must catch a wrong name on Tessera's side).
const (
	destHeader    = "x-gateway-destination-endpoint"
	lbNamespace   = "envoy.lb"
	subsetNS      = "envoy.lb.subset_hint"
	subsetKey     = "x-gateway-destination-endpoint-subset"
	maxChunkBytes = 62_000 // Envoy's FULL_DUPLEX_STREAMED chunks and the picker's echo stay at or under this
)

type bodyMode = filterv3.ProcessingMode_BodySendMode

const (
	modeBuffered   = filterv3.ProcessingMode_BUFFERED
	modeFullDuplex = filterv3.ProcessingMode_FULL_DUPLEX_STREAMED
	modeStreamed   = filterv3.ProcessingMode_STREAMED
)

// headersMsg is the first message Envoy sends: pseudo-headers as raw_value bytes (as Envoy ≥ 1.27
// does), protocol_config with the body mode, and the route's filter metadata when given.
func headersMsg(method, path string, eos bool, mode bodyMode, meta map[string]*structpb.Struct) *extprocv3.ProcessingRequest {
	hv := func(k, v string) *corev3.HeaderValue { return &corev3.HeaderValue{Key: k, RawValue: []byte(v)} }
	req := &extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
			Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
				hv(":method", method), hv(":path", path), hv(":authority", "gateway"), hv(":scheme", "http"), hv("content-type", "application/json"),
			}},
			EndOfStream: eos,
		}},
		ProtocolConfig: &extprocv3.ProtocolConfiguration{RequestBodyMode: mode, ResponseBodyMode: filterv3.ProcessingMode_NONE},
	}
	if meta != nil {
		req.MetadataContext = &corev3.Metadata{FilterMetadata: meta}
	}
	return req
}

func bodyMsg(b []byte, eos bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: b, EndOfStream: eos}}}
}

// decision is what one answer says about routing: the header mutation's value and the
// envoy.lb dynamic metadata value, decoded with the Go structpb types.
type decision struct {
	header, metadata string
	clearRouteCache  bool
}

func decisionOf(r *extprocv3.ProcessingResponse) decision {
	var common *extprocv3.CommonResponse
	switch v := r.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_RequestHeaders:
		common = v.RequestHeaders.GetResponse()
	case *extprocv3.ProcessingResponse_RequestBody:
		common = v.RequestBody.GetResponse()
	}
	var d decision
	d.clearRouteCache = common.GetClearRouteCache()
	for _, o := range common.GetHeaderMutation().GetSetHeaders() {
		if o.GetHeader().GetKey() == destHeader {
			d.header = string(o.GetHeader().GetRawValue())
			if d.header == "" {
				d.header = o.GetHeader().GetValue()
			}
		}
	}
	if lb, ok := r.GetDynamicMetadata().GetFields()[lbNamespace]; ok {
		d.metadata = lb.GetStructValue().GetFields()[destHeader].GetStringValue()
	}
	return d
}

// consistent: the header and the metadata name the same value.
func (d decision) consistent() error {
	if d.header == "" {
		return errors.New("no x-gateway-destination-endpoint header mutation in the answer")
	}
	if d.metadata != d.header {
		return fmt.Errorf("dynamic metadata envoy.lb/x-gateway-destination-endpoint = %q, header = %q", d.metadata, d.header)
	}
	return nil
}

type stream = extprocv3.ExternalProcessor_ProcessClient

// drain half-closes the stream and reads until the picker ends it (io.EOF): a stream ended in
// order, so the picker's in-flight count for it is released before the next request.
func drain(s stream) error {
	if err := s.CloseSend(); err != nil {
		return err
	}
	for {
		if _, err := s.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("stream ended with %v", err)
		}
	}
}

// duplexResult is one FULL_DUPLEX_STREAMED exchange.
type duplexResult struct {
	first     *extprocv3.ProcessingResponse // the headers answer, or an immediate response
	echoed    []byte
	chunkLens []int
}

// duplex sends headers and the body in chunks of at most chunk bytes, then reads the headers
// answer and the streamed body echo up to its end_of_stream, and ends the stream.
func duplex(ctx context.Context, c extprocv3.ExternalProcessorClient, path string, body []byte, chunk int, meta map[string]*structpb.Struct) (duplexResult, error) {
	var res duplexResult
	s, err := c.Process(ctx)
	if err != nil {
		return res, err
	}
	if err := s.Send(headersMsg("POST", path, false, modeFullDuplex, meta)); err != nil {
		return res, err
	}
	for off := 0; off < len(body); off += chunk {
		end := min(off+chunk, len(body))
		if err := s.Send(bodyMsg(body[off:end], end == len(body))); err != nil {
			return res, err
		}
	}
	first, err := s.Recv()
	if err != nil {
		return res, fmt.Errorf("first answer: %w", err)
	}
	res.first = first
	if first.GetImmediateResponse() != nil {
		return res, drain(s)
	}
	if first.GetRequestHeaders() == nil {
		return res, fmt.Errorf("first answer is not a request_headers answer: %T", first.GetResponse())
	}
	var buf bytes.Buffer
	for {
		r, err := s.Recv()
		if err != nil {
			return res, fmt.Errorf("body echo: %w", err)
		}
		sr := r.GetRequestBody().GetResponse().GetBodyMutation().GetStreamedResponse()
		if sr == nil {
			return res, fmt.Errorf("expected a streamed_response body answer, got %T", r.GetResponse())
		}
		buf.Write(sr.GetBody())
		res.chunkLens = append(res.chunkLens, len(sr.GetBody()))
		if sr.GetEndOfStream() {
			break
		}
	}
	res.echoed = buf.Bytes()
	return res, drain(s)
}

// pick is one full-duplex request whose answer must be a consistent decision; it returns the endpoint.
func pick(ctx context.Context, c extprocv3.ExternalProcessorClient, path string, body []byte, meta map[string]*structpb.Struct) (string, error) {
	r, err := duplex(ctx, c, path, body, maxChunkBytes, meta)
	if err != nil {
		return "", err
	}
	if ir := r.first.GetImmediateResponse(); ir != nil {
		return "", fmt.Errorf("ImmediateResponse %d (%s)", ir.GetStatus().GetCode(), ir.GetDetails())
	}
	d := decisionOf(r.first)
	if err := d.consistent(); err != nil {
		return "", err
	}
	return d.header, nil
}

func subsetMeta(v *structpb.Value) map[string]*structpb.Struct {
	return map[string]*structpb.Struct{subsetNS: {Fields: map[string]*structpb.Value{subsetKey: v}}}
}
