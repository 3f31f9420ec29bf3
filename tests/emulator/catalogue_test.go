package emulator

import (
	"slices"
	"testing"
	"time"
)

// GET /models lists the catalogue's kinds of model as OpenRouter writes
// them, spelled here byte for byte where it matters: dates, the
// not-retiring stamp, null, an alias; the retired model and the ended
// :free variant are not listed. GET /models/user lists what a key's
// guardrail allows.
func TestCatalogue(t *testing.T) {
	s, base := start(t)
	var models []struct {
		ID             string  `json:"id"`
		ExpirationDate *string `json:"expiration_date"`
		AliasTarget    *struct {
			Slug string `json:"slug"`
		} `json:"alias_target"`
	}
	r := call(t, "GET", base+"/models", "", "")
	r.data(t, &models)
	byID := map[string]int{}
	for i, m := range models {
		byID[m.ID] = i
	}
	now := time.Now().UTC()
	date := func(id string) string {
		i, ok := byID[id]
		if !ok {
			t.Fatalf("%s not listed", id)
		}
		if d := models[i].ExpirationDate; d != nil {
			return *d
		}
		return "null"
	}
	for id, want := range map[string]string{
		ModelRetiringSoon:  now.AddDate(0, 0, 5).Format("2006-01-02"),
		ModelRetiringLater: now.AddDate(0, 0, 12).Format("2006-01-02"),
		ModelFreeEndedPaid: "2098-12-31",
		ModelIDs[0]:        "2098-12-31",
		ModelIDs[1]:        "null",
	} {
		if got := date(id); got != want {
			t.Errorf("%s: expiration_date %s, want %s", id, got, want)
		}
	}
	if i, ok := byID["~emulator/model-latest"]; !ok || models[i].AliasTarget == nil || models[i].AliasTarget.Slug != "openai/gpt-4o" {
		t.Errorf("alias: %s", r.body)
	}
	for _, id := range []string{"emulator/retired", "emulator/free-ended:free"} {
		if _, ok := byID[id]; ok {
			t.Errorf("%s listed", id)
		}
	}
	if got := s.ListedModelIDs(); len(got) != len(models) {
		t.Errorf("ListedModelIDs: %d, GET /models: %d", len(got), len(models))
	}

	key, other := s.NewKey(KeyOptions{}), s.NewKey(KeyOptions{})
	s.SetGuardrail(key, ModelIDs[0], ModelRetiringSoon)
	var mine, theirs []struct {
		ID string `json:"id"`
	}
	call(t, "GET", base+"/models/user", key, "").data(t, &mine)
	call(t, "GET", base+"/models/user", other, "").data(t, &theirs)
	if ids := []string{mine[0].ID, mine[len(mine)-1].ID}; len(mine) != 2 || !slices.Contains(ids, ModelIDs[0]) || !slices.Contains(ids, ModelRetiringSoon) {
		t.Errorf("the guarded key's /models/user: %+v", mine)
	}
	if len(theirs) != len(models) || s.Allows(key, ModelIDs[1]) || !s.Allows(other, ModelIDs[1]) {
		t.Errorf("an unguarded key's /models/user lists %d of %d", len(theirs), len(models))
	}
	if r := call(t, "GET", base+"/models/user", "", ""); r.status != 401 {
		t.Errorf("/models/user without a key: %d", r.status)
	}
	s.SetGuardrail(key)
	if !s.Allows(key, ModelIDs[1]) {
		t.Error("a lifted guardrail still applies")
	}
}
