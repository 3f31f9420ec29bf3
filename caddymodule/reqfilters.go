package caddymodule

// reqfilters.go owns what an inference request's body asks of a model's
// endpoints, read only when a no-endpoints 404 needs it: which of its
// members can exclude endpoints (tools, tool_choice, response_format,
// cache_control, image or file parts, the provider object's routing and
// policy members), and which of them the model's supported_parameters
// prove excluded every endpoint. The body is the client's and may be
// anything: it is read bounded, and a member is named only by its path,
// never by its value.

import (
	"bytes"
	"encoding/json"
	"slices"
)

// reqMember is one member of a request that can exclude endpoints.
type reqMember struct {
	// path is how the member is named to the client ("tools",
	// "provider.only").
	path string
	// certain: the model's supported_parameters show that no endpoint
	// serves it.
	certain bool
}

// requestFilters is what a request asks that can exclude endpoints.
type requestFilters struct {
	members []reqMember
	// dataCollectionDeny, zdr, only: the provider object asks for them.
	dataCollectionDeny, zdr, only bool
}

// has reports whether the request sends the member at path.
func (r *requestFilters) has(path string) bool {
	for _, m := range r.members {
		if m.path == path {
			return true
		}
	}
	return false
}

// certain is the first member that certainly excluded every endpoint.
func (r *requestFilters) certain() (reqMember, bool) {
	for _, m := range r.members {
		if m.certain {
			return m, true
		}
	}
	return reqMember{}, false
}

// The request members that can exclude endpoints, as named to clients.
const (
	memberTools             = "tools"
	memberToolChoice        = "tool_choice"
	memberResponseFormat    = "response_format"
	memberCacheControl      = "cache_control"
	memberImageParts        = "image parts"
	memberFileParts         = "file parts"
	memberOnly              = "provider.only"
	memberOrder             = "provider.order with allow_fallbacks false"
	memberIgnore            = "provider.ignore"
	memberRequireParameters = "provider.require_parameters"
	memberDataCollection    = "provider.data_collection"
	memberZDR               = "provider.zdr"
	memberMaxPrice          = "provider.max_price"
	memberQuantizations     = "provider.quantizations"
)

// analyseRequest reads body (an inference request in any of the three
// envelopes) against the model's supported_parameters (nil when the
// catalogue does not know them: nothing is then certain).
func analyseRequest(body []byte, supported []string) requestFilters {
	var req struct {
		Tools          json.RawMessage `json:"tools"`
		ToolChoice     json.RawMessage `json:"tool_choice"`
		ResponseFormat *struct {
			Type string `json:"type"`
		} `json:"response_format"`
		Provider *struct {
			Only              json.RawMessage `json:"only"`
			Order             json.RawMessage `json:"order"`
			AllowFallbacks    *bool           `json:"allow_fallbacks"`
			Ignore            json.RawMessage `json:"ignore"`
			RequireParameters bool            `json:"require_parameters"`
			DataCollection    string          `json:"data_collection"`
			ZDR               bool            `json:"zdr"`
			MaxPrice          json.RawMessage `json:"max_price"`
			Quantizations     json.RawMessage `json:"quantizations"`
		} `json:"provider"`
	}
	var out requestFilters
	if json.Unmarshal(body, &req) != nil {
		return out
	}
	known := supported != nil
	lacks := func(p ...string) bool {
		if !known {
			return false
		}
		for _, s := range p {
			if slices.Contains(supported, s) {
				return false
			}
		}
		return true
	}
	add := func(path string, certain bool) { out.members = append(out.members, reqMember{path, certain}) }
	if nonEmpty(req.Tools) {
		add(memberTools, lacks("tools"))
	}
	if nonEmpty(req.ToolChoice) {
		add(memberToolChoice, lacks("tool_choice"))
	}
	if rf := req.ResponseFormat; rf != nil && rf.Type != "" && rf.Type != "text" {
		add(memberResponseFormat, lacks("response_format", "structured_outputs"))
	}
	// Content parts, found by their marks anywhere in the messages: a
	// key the body holds as text would do no harm, it is never repeated.
	if bytes.Contains(body, []byte(`"cache_control"`)) {
		add(memberCacheControl, false)
	}
	for _, mark := range []string{`"image_url"`, `"input_image"`, `"image"`} {
		if bytes.Contains(body, []byte(`"type":`+mark)) || bytes.Contains(body, []byte(`"type": `+mark)) {
			add(memberImageParts, false)
			break
		}
	}
	for _, mark := range []string{`"file"`, `"input_file"`, `"document"`} {
		if bytes.Contains(body, []byte(`"type":`+mark)) || bytes.Contains(body, []byte(`"type": `+mark)) {
			add(memberFileParts, false)
			break
		}
	}
	if p := req.Provider; p != nil {
		if nonEmpty(p.Only) {
			add(memberOnly, false)
			out.only = true
		}
		if nonEmpty(p.Order) && p.AllowFallbacks != nil && !*p.AllowFallbacks {
			add(memberOrder, false)
		}
		if nonEmpty(p.Ignore) {
			add(memberIgnore, false)
		}
		if p.RequireParameters {
			add(memberRequireParameters, false)
		}
		if p.DataCollection == "deny" {
			add(memberDataCollection, false)
			out.dataCollectionDeny = true
		}
		if p.ZDR {
			add(memberZDR, false)
			out.zdr = true
		}
		if nonEmpty(p.MaxPrice) {
			add(memberMaxPrice, false)
		}
		if nonEmpty(p.Quantizations) {
			add(memberQuantizations, false)
		}
	}
	return out
}

// nonEmpty reports whether a member was sent with a value other than
// null, false, "", [] or {}.
func nonEmpty(raw json.RawMessage) bool {
	switch string(bytes.TrimSpace(raw)) {
	case "", "null", "false", `""`, "[]", "{}":
		return false
	}
	return true
}
