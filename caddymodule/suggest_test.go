package caddymodule

import (
	"fmt"
	"reflect"
	"strconv"
	"testing"
)

var suggestCatalogue = []string{
	"anthropic/claude-sonnet-4.6", "anthropic/claude-sonnet-4.5", "anthropic/claude-3.5-sonnet",
	"anthropic/claude-3.5-sonnet-20240620", "openai/gpt-4o", "openai/gpt-4o-2024-08-06", "openai/gpt-4o-mini",
	"openai/gpt-5.2", "deepseek/deepseek-chat-v3.1", "allenai/molmo-2-8b", "~anthropic/claude-sonnet-latest",
	"google/gemini-2.5-flash", "google/gemini-2.5-flash:free", "meta-llama/llama-3.1-70b-instruct",
}

// The mistakes users make, each with the id a user would have meant first.
func TestSuggestions(t *testing.T) {
	x := newSuggestIndex(suggestCatalogue)
	for _, c := range []struct {
		slug      string
		fallbacks []string
		first     string
	}{
		{"claude-sonnet-4-6", nil, "anthropic/claude-sonnet-4.6"},           // no author, "-" for "."
		{"anthropic/claude-sonnet-4-6", nil, "anthropic/claude-sonnet-4.6"}, // "-" for "."
		{"Anthropic/Claude-Sonnet-4.6", nil, "anthropic/claude-sonnet-4.6"}, // case
		{"openrouter/anthropic/claude-3.5-sonnet", nil, "anthropic/claude-3.5-sonnet"},
		{"openrouter/openai/gpt-4o", nil, "openai/gpt-4o"},
		{"deepseek/deepseek-chat-v3.1:free", nil, "deepseek/deepseek-chat-v3.1"}, // :free ended
		{"openai/gpt-4o-2024-05-13", nil, "openai/gpt-4o"},                       // a snapshot no longer listed
		{"anthropic/claude-3-5-sonnet-20241022", nil, "anthropic/claude-3.5-sonnet"},
		{"gpt4o", nil, ""},                                  // nothing close enough without an author
		{"openai/gpt-4oo", nil, "openai/gpt-4o"},            // one edit, same author
		{"openai/gpt-4o", nil, "openai/gpt-4o-2024-08-06"},  // a listed id is not suggested to itself
		{"x/y", []string{"openai/gpt-4o"}, "openai/gpt-4o"}, // OpenRouter's own first
		{"google/gemini-2-5-flash", nil, "google/gemini-2.5-flash"},
	} {
		got := x.suggest(c.slug, c.fallbacks)
		if len(got) > maxSuggestions {
			t.Errorf("%s: %d suggestions", c.slug, len(got))
		}
		first := ""
		if len(got) > 0 {
			first = got[0]
		}
		if first != c.first {
			t.Errorf("%s: got %v, want %q first", c.slug, got, c.first)
		}
		for _, g := range got {
			if g == c.slug {
				t.Errorf("%s suggested to itself", c.slug)
			}
		}
	}
	// A dated snapshot asked: the undated id and its other snapshot.
	if got := x.suggest("anthropic/claude-3.5-sonnet-20241022", nil); !reflect.DeepEqual(got, []string{"anthropic/claude-3.5-sonnet", "anthropic/claude-3.5-sonnet-20240620"}) {
		t.Errorf("snapshot: %v", got)
	}
}

func TestEditDistanceWithin(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"gpt-4o", "gpt-4o", 0}, {"gpt-4o", "gpt-4oo", 1}, {"gpt-4o", "gtp-4o", 2}, {"gpt-4o", "gpt-5", 2},
		{"gpt-4o", "claude", -1}, {"", "ab", 2}, {"abc", "", -1}, {"kitten", "sitting", -1},
	} {
		if got := editDistanceWithin(c.a, c.b, 2); got != c.want {
			t.Errorf("%q %q: %d, want %d", c.a, c.b, got, c.want)
		}
	}
}

// The index is built once per version of the listed slice.
func TestSuggestIndexPerVersion(t *testing.T) {
	var s suggestIndexes
	id := func(s *string) string { return *s }
	a := []string{"a/b"}
	x1 := suggestIndexFor(&s, a, id)
	if suggestIndexFor(&s, a, id) != x1 {
		t.Error("rebuilt for the same version")
	}
	if suggestIndexFor(&s, []string{"a/b"}, id) == x1 {
		t.Error("kept for another version")
	}
}

// syntheticIDs are n ids spread over authors authors.
func syntheticIDs(n, authors int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("author%d/model-%d.%d-instruct", i%authors, i/authors, i%7)
		if i%5 == 0 {
			ids[i] += ":free"
		}
	}
	return ids
}

// BenchmarkSuggest is the time to find suggestions for a mistyped slug
// over 500 and 20,000 listed models: with ten models an author (today's
// catalogue has about six), and with 500 an author, the worst case of
// the edit distance, which compares the author's models one by one (the
// index is built once per catalogue version, outside the loop; its build
// time is BenchmarkSuggestIndexBuild).
func BenchmarkSuggest(b *testing.B) {
	for _, c := range []struct{ n, authors int }{{500, 50}, {20000, 2000}, {20000, 40}} {
		x := newSuggestIndex(syntheticIDs(c.n, c.authors))
		for _, slug := range []string{"model-3-2-instruct", "author3/model-3-3-instruct:free", "author3/modle-3.3-instruct", "nobody/nothing"} {
			b.Run(strconv.Itoa(c.n)+"/"+strconv.Itoa(c.n/c.authors)+"-per-author/"+slug, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					_ = x.suggest(slug, nil)
				}
			})
		}
	}
}

func BenchmarkSuggestIndexBuild(b *testing.B) {
	for _, n := range []int{500, 20000} {
		ids := syntheticIDs(n, n/10)
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			for b.Loop() {
				_ = newSuggestIndex(ids)
			}
		})
	}
}
