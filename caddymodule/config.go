package caddymodule

// config.go owns decoding a handler's JSON config so that every error names
// the option it is about ("cache_ttl: time: invalid duration ..."), which
// encoding/json does not do for values that decode themselves, such as
// caddy.Duration.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
)

// decodeOptions decodes a JSON object into the struct dst points to, one
// member at a time, refusing unknown members as Caddy does.
func decodeOptions(data []byte, dst any) error {
	var members map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&members); err != nil {
		return fmt.Errorf("config is not a JSON object: %v", err)
	}
	fields := make(map[string]reflect.Value)
	optionFields(reflect.ValueOf(dst).Elem(), fields)
	for name, raw := range members {
		f, ok := fields[name]
		if !ok {
			return fmt.Errorf("%s: unknown option", name)
		}
		d := json.NewDecoder(bytes.NewReader(raw))
		d.DisallowUnknownFields()
		if err := d.Decode(f.Addr().Interface()); err != nil {
			return fmt.Errorf("%s: %v", name, strings.TrimPrefix(err.Error(), "json: "))
		}
	}
	return nil
}

// optionFields maps the JSON names of v's exported fields, those of
// embedded structs included, to the fields.
func optionFields(v reflect.Value, into map[string]reflect.Value) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		if sf.Anonymous && sf.Type.Kind() == reflect.Struct {
			optionFields(v.Field(i), into)
			continue
		}
		name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		into[name] = v.Field(i)
	}
}
