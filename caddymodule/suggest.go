package caddymodule

// suggest.go owns the "did you mean" of an unknown model: an index of the
// catalogue's listed ids by the forms users mistype them in, built once
// per catalogue version, and the ranking of up to three nearest valid ids
// for a slug. It suggests, never rewrites: the request's model is never
// changed.
//
// The mistakes it finds, each by one map lookup: a missing "author/"
// prefix, "-" for "." between version digits (and "_" or a space), case,
// a library's own prefix ("openrouter/"), a variant that ended (":free"),
// a dated snapshot against its alias or undated id (and "-latest"); then,
// within the slug's author's models only, an id one or two edits away.

import (
	"math/bits"
	"strings"
	"sync"
)

// maxSuggestions is how many ids an answer offers.
const maxSuggestions = 3

// maxFuzzyScan bounds the ids of one author compared edit by edit.
const maxFuzzyScan = 512

// suggestIndex finds the listed ids near a slug.
type suggestIndex struct {
	ids []string
	// byName: the normalised name (no author, no variant, "." "_" " " as
	// "-", lower case); byStem: the same without a date or "-latest";
	// byAuthor: the ids of each author, for the edit distance.
	byName, byStem, byAuthor map[string][]int32
	// norms are each id's normalised name, for the edit distance.
	norms []string
	// authors and variants of each id.
	authors, variants []string
	// masks are the characters each normalised name holds, one bit each:
	// an edit changes at most two bits, so most names are ruled out
	// before the edit distance.
	masks []uint64
}

// charMask is the set of characters of s, folded onto 64 bits.
func charMask(s string) uint64 {
	var m uint64
	for i := 0; i < len(s); i++ {
		m |= 1 << (s[i] & 63)
	}
	return m
}

// slugParts is a slug as the index reads it.
type slugParts struct {
	author, name, stem, variant string
}

// libraryPrefixes are the prefixes libraries put before OpenRouter's ids.
var libraryPrefixes = []string{"openrouter/", "openrouter:", "openrouter-"}

// partsOf normalises a slug.
func partsOf(s string) slugParts {
	s = strings.ToLower(strings.TrimSpace(s))
	for again := true; again; {
		again = false
		for _, p := range libraryPrefixes {
			if rest, ok := strings.CutPrefix(s, p); ok && rest != "" {
				s, again = rest, true
			}
		}
	}
	s = strings.TrimPrefix(s, "~")
	var p slugParts
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		s, p.variant = s[:i], s[i+1:]
	}
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		p.author, s = strings.TrimPrefix(s[:i], "~"), s[i+1:]
		if j := strings.LastIndexByte(p.author, '/'); j >= 0 {
			p.author = p.author[j+1:]
		}
	}
	p.name = strings.Map(func(r rune) rune {
		switch r {
		case '.', '_', ' ':
			return '-'
		}
		return r
	}, s)
	p.stem = stemOf(p.name)
	return p
}

// stemOf is a normalised name without a trailing date (-20240620,
// -2024-06-20, -0613, -2407) or "-latest".
func stemOf(name string) string {
	for {
		i := strings.LastIndexByte(name, '-')
		if i <= 0 {
			return name
		}
		tail := name[i+1:]
		if tail != "latest" && !isDateTail(tail) {
			return name
		}
		name = name[:i]
		// -2024-06-20: the day and month go with the year.
		if len(tail) == 2 {
			for k := 0; k < 2; k++ {
				if j := strings.LastIndexByte(name, '-'); j > 0 && isDigits(name[j+1:]) {
					name = name[:j]
				}
			}
		}
	}
}

func isDateTail(s string) bool {
	switch len(s) {
	case 4, 6, 8:
		return isDigits(s)
	case 2:
		return isDigits(s) // the day of -YYYY-MM-DD
	}
	return false
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// newSuggestIndex indexes ids.
func newSuggestIndex(ids []string) *suggestIndex {
	x := &suggestIndex{
		ids: ids, norms: make([]string, len(ids)), masks: make([]uint64, len(ids)), authors: make([]string, len(ids)), variants: make([]string, len(ids)),
		byName: make(map[string][]int32, len(ids)), byStem: make(map[string][]int32, len(ids)), byAuthor: map[string][]int32{},
	}
	for i, id := range ids {
		p := partsOf(id)
		x.norms[i], x.authors[i], x.variants[i], x.masks[i] = p.name, p.author, p.variant, charMask(p.name)
		x.byName[p.name] = append(x.byName[p.name], int32(i))
		if p.stem != p.name {
			x.byStem[p.stem] = append(x.byStem[p.stem], int32(i))
		}
		x.byStem[p.stem+"\x00"] = append(x.byStem[p.stem+"\x00"], int32(i))
		x.byAuthor[p.author] = append(x.byAuthor[p.author], int32(i))
	}
	return x
}

// candidate is one id found, with its rank (lower is nearer).
type candidate struct {
	i    int32
	rank int
}

// suggest is up to maxSuggestions listed ids near slug, nearest first,
// after OpenRouter's own fallbacks (which are kept first, as sent); never
// slug itself.
func (x *suggestIndex) suggest(slug string, fallbacks []string) []string {
	out := make([]string, 0, maxSuggestions)
	add := func(id string) {
		if len(out) == maxSuggestions || id == slug {
			return
		}
		for _, o := range out {
			if o == id {
				return
			}
		}
		out = append(out, id)
	}
	for _, f := range fallbacks {
		add(f)
	}
	if x == nil || len(out) == maxSuggestions {
		return out
	}
	p := partsOf(slug)
	var found [16]candidate
	cands := found[:0]
	consider := func(list []int32, tier int) {
		for _, i := range list {
			if len(cands) == cap(found) {
				return
			}
			r := tier * 8
			if x.authors[i] != p.author {
				r += 4
			}
			if x.variants[i] != p.variant {
				r += 2
				if x.variants[i] != "" {
					r++ // another variant is further than the plain id
				}
			}
			cands = append(cands, candidate{i, r})
		}
	}
	consider(x.byName[p.name], 0)
	consider(x.byStem[p.name+"\x00"], 1) // a snapshot of the undated name asked
	consider(x.byStem[p.stem+"\x00"], 1) // the alias of the dated name asked
	if len(cands) < maxSuggestions && p.author != "" {
		bucket, mask := x.byAuthor[p.author], charMask(p.name)
		for n, i := range bucket {
			if n == maxFuzzyScan {
				break
			}
			if bits.OnesCount64(mask^x.masks[i]) > 4 {
				continue
			}
			if d := editDistanceWithin(p.name, x.norms[i], 2); d >= 0 {
				consider([]int32{i}, 2+d)
			}
		}
	}
	// Insertion sort: a handful of candidates.
	for i := 1; i < len(cands); i++ {
		for j := i; j > 0 && less(x, cands[j], cands[j-1]); j-- {
			cands[j], cands[j-1] = cands[j-1], cands[j]
		}
	}
	for _, c := range cands {
		add(x.ids[c.i])
	}
	return out
}

func less(x *suggestIndex, a, b candidate) bool {
	if a.rank != b.rank {
		return a.rank < b.rank
	}
	if la, lb := len(x.ids[a.i]), len(x.ids[b.i]); la != lb {
		return la < lb
	}
	return x.ids[a.i] < x.ids[b.i]
}

// editDistanceWithin is the Levenshtein distance of a and b when it is at
// most k, -1 otherwise; banded, so it costs O(k·len).
func editDistanceWithin(a, b string, k int) int {
	const far int32 = 1 << 20
	la, lb := len(a), len(b)
	if d := la - lb; d > k || -d > k || la > 64 || lb > 64 {
		return -1
	}
	var rows [2][66]int32
	prev, cur := rows[0][:], rows[1][:]
	for j := 0; j <= lb; j++ {
		prev[j] = far
		if j <= k {
			prev[j] = int32(j)
		}
	}
	prev[lb+1] = far
	for i := 1; i <= la; i++ {
		lo, hi := max(1, i-k), min(lb, i+k)
		cur[lo-1] = far
		if lo == 1 && i <= k {
			cur[0] = int32(i)
		}
		best := cur[lo-1]
		for j := lo; j <= hi; j++ {
			v := prev[j-1]
			if a[i-1] != b[j-1] {
				v++
			}
			v = min(v, prev[j]+1, cur[j-1]+1)
			cur[j] = v
			best = min(best, v)
		}
		cur[hi+1] = far
		if best > int32(k) {
			return -1
		}
		prev, cur = cur, prev
	}
	if d := int(prev[lb]); d <= k {
		return d
	}
	return -1
}

// suggestIndexes keeps one index: the one of the catalogue version last
// asked, rebuilt lazily when the listed slice changes (bounded memory).
type suggestIndexes struct {
	mu  sync.Mutex
	src any // the listed slice's first element (a pointer)
	n   int
	x   *suggestIndex
}

// suggestIndexFor is the index of listed, built once per version of it;
// id reads a listed model's id.
func suggestIndexFor[M any](s *suggestIndexes, listed []M, id func(*M) string) *suggestIndex {
	if len(listed) == 0 {
		return nil
	}
	var src any = &listed[0]
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.x != nil && s.src == src && s.n == len(listed) {
		return s.x
	}
	ids := make([]string, len(listed))
	for i := range listed {
		ids[i] = id(&listed[i])
	}
	s.src, s.n, s.x = src, len(listed), newSuggestIndex(ids)
	return s.x
}
