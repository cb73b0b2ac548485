package meshctl

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"minimesh/api"
	meshv1 "minimesh/proto/mesh/v1"
)

// shortNames are meshctl's own abbreviations of the kinds, as kubectl's
// svc or deploy (later CRDs must not declare names kubectl already
// resolves, such as svc: these are meshctl's alone).
var shortNames = map[string]api.Kind{
	"svc": api.KindService,
	"rt":  api.KindRoute,
	"rl":  api.KindRateLimit,
	"al":  api.KindAccessLog,
	"ap":  api.KindAuthorizationPolicy,
	"cf":  api.KindConfigFile,
	"ext": api.KindExternalService,
	"la":  api.KindLogAdapter,
	"ls":  api.KindLogShipping,
}

// shortName is k's abbreviation.
func shortName(k api.Kind) string {
	for s, kk := range shortNames {
		if kk == k {
			return s
		}
	}
	return ""
}

// parseKind resolves a kind as typed: its name or plural in any case
// (api.ParseKind) or its short name.
func parseKind(s string) (api.Kind, error) {
	if k, ok := shortNames[strings.ToLower(s)]; ok {
		return k, nil
	}
	k, err := api.ParseKind(s)
	if err != nil {
		var names []string
		for _, k := range api.Kinds() {
			names = append(names, fmt.Sprintf("%s (%s)", k, shortName(k)))
		}
		return "", fmt.Errorf("unknown kind %q; one of %s, or their plurals", s, strings.Join(names, ", "))
	}
	return k, nil
}

// resourceName is kind/name, as -o name prints it: "route/api-v1".
func resourceName(k api.Kind, name string) string {
	return strings.ToLower(string(k)) + "/" + name
}

// kindColumns is what get shows of one kind, between NAME and AGE.
type kindColumns struct {
	header, wide string
	cells        func(o api.Object, now time.Time, wide bool) []string
}

var columns = map[api.Kind]kindColumns{
	api.KindService: {"PORTS\tSUBSETS", "\tSERVING IDENTITIES", func(o api.Object, _ time.Time, wide bool) []string {
		s := o.(*api.Service).Spec
		var ports, subsets []string
		for _, p := range s.GetPorts() {
			n := fmt.Sprintf("%d/%s", p.GetPort(), enumName(p.GetProtocol().String(), "PROTOCOL_"))
			if p.GetName() != "" {
				n = p.GetName() + ":" + n
			}
			ports = append(ports, n)
		}
		for _, ss := range s.GetSubsets() {
			subsets = append(subsets, ss.GetName())
		}
		c := []string{list(ports), list(subsets)}
		if wide {
			c = append(c, list(s.GetServingIdentities()))
		}
		return c
	}},
	api.KindRoute: {"SERVICE\tBACKENDS\tTIMEOUT\tRETRIES", "\tMATCHES", func(o api.Object, _ time.Time, wide bool) []string {
		s := o.(*api.Route).Spec
		var backends []string
		for _, b := range s.GetBackends() {
			n := b.GetService()
			if b.GetSubset() != "" {
				n += "/" + b.GetSubset()
			}
			if b.GetPort() != 0 {
				n += ":" + strconv.Itoa(int(b.GetPort()))
			}
			if b.Weight != nil {
				n += "=" + strconv.Itoa(int(b.GetWeight()))
			}
			backends = append(backends, n)
		}
		timeout, retries := "-", "-"
		if s.GetTimeout() != nil {
			timeout = s.GetTimeout().AsDuration().String()
		}
		if r := s.GetRetries(); r != nil {
			retries = strconv.Itoa(int(r.GetAttempts()))
			if r.GetPerTryTimeout() != nil {
				retries += " x " + r.GetPerTryTimeout().AsDuration().String()
			}
		}
		c := []string{s.GetService(), list(backends), timeout, retries}
		if wide {
			c = append(c, matches(s.GetMatches()))
		}
		return c
	}},
	api.KindRateLimit: {"SERVICE\tROUTE\tRATE\tPER SOURCE", "\tOVERRIDES", func(o api.Object, _ time.Time, wide bool) []string {
		s := o.(*api.RateLimit).Spec
		c := []string{s.GetService(), orDash(s.GetRoute()), rate(s.GetRequestsPerSecond(), s.GetBurst()), strconv.FormatBool(s.GetPerSourceIdentity())}
		if wide {
			var ov []string
			for _, x := range s.GetOverrides() {
				ov = append(ov, x.GetIdentity()+"="+rate(x.GetRequestsPerSecond(), x.GetBurst()))
			}
			c = append(c, list(ov))
		}
		return c
	}},
	api.KindAccessLog: {"SERVICE\tSTATE\tTTL\tSAMPLE", "\tFIELDS", func(o api.Object, now time.Time, wide bool) []string {
		a := o.(*api.AccessLog)
		s := a.Spec
		state, ttl := "disabled", "-"
		if s.GetEnabled() {
			state = "enabled"
		}
		if s.GetTtl() != nil {
			end := a.UpdateTime.Add(s.GetTtl().AsDuration())
			ttl = s.GetTtl().AsDuration().String()
			if !a.UpdateTime.IsZero() {
				if left := end.Sub(now); left > 0 {
					ttl += " (" + age(left) + " left)"
				} else {
					ttl += " (expired)"
					state = "expired"
				}
			}
		}
		sample := "100%"
		if s.SampleRatio != nil {
			sample = strconv.FormatFloat(s.GetSampleRatio()*100, 'f', -1, 64) + "%"
		}
		c := []string{s.GetService(), state, ttl, sample}
		if wide {
			c = append(c, list(s.GetFields()))
		}
		return c
	}},
	api.KindAuthorizationPolicy: {"SERVICE\tRULES\tDRY RUN", "", func(o api.Object, _ time.Time, _ bool) []string {
		s := o.(*api.AuthorizationPolicy).Spec
		count := map[string]int{}
		var order []string
		for _, r := range s.GetRules() {
			a := enumName(r.GetAction().String(), "AUTHORIZATION_ACTION_")
			if count[a] == 0 {
				order = append(order, a)
			}
			count[a]++
		}
		var rules []string
		for _, a := range order {
			rules = append(rules, fmt.Sprintf("%d %s", count[a], a))
		}
		return []string{s.GetService(), list(rules), strconv.FormatBool(s.GetDryRun())}
	}},
	api.KindConfigFile: {"SERVICE\tPATH\tMODE\tSIZE", "", func(o api.Object, _ time.Time, _ bool) []string {
		s := o.(*api.ConfigFile).Spec
		mode := s.GetMode()
		if mode == 0 {
			mode = 0o644
		}
		return []string{s.GetService(), s.GetPath(), fmt.Sprintf("%04o", mode), strconv.Itoa(len(s.GetContent()))}
	}},
	api.KindExternalService: {"HOSTS\tPORT\tPROTOCOL\tSERVER NAME", "\tCLIENT CERT\tALLOWED SERVICES", func(o api.Object, _ time.Time, wide bool) []string {
		s := o.(*api.ExternalService).Spec
		proto := enumName(s.GetProtocol().String(), "EXTERNAL_PROTOCOL_")
		name := "-"
		if proto == "tls" || proto == "https" {
			name = api.ExternalServerName(s)
		}
		c := []string{list(s.GetHosts()), strconv.Itoa(int(s.GetPort())), proto, name}
		if wide {
			cert := "-"
			if cc := s.GetClientCertificate(); cc != nil {
				cert = cc.GetCertFile()
			}
			allowed := "*"
			if len(s.GetAllowedServices()) > 0 {
				allowed = list(s.GetAllowedServices())
			}
			c = append(c, cert, allowed)
		}
		return c
	}},
	api.KindLogAdapter: {"SERVICE\tFILES\tFORMAT\tMULTI-LINE", "\tMAX RECORD\tFLUSH AFTER", func(o api.Object, _ time.Time, wide bool) []string {
		s := o.(*api.LogAdapter).Spec
		format := "text"
		if s.GetFormat() != 0 {
			format = enumName(s.GetFormat().String(), "LOG_FORMAT_")
		}
		multi := "no"
		if s.GetRecordStart() != "" {
			multi = "yes"
		}
		c := []string{s.GetService(), list(s.GetFiles()), format, multi}
		if wide {
			maxRec := int(s.GetMaxRecordBytes())
			if maxRec == 0 {
				maxRec = api.DefaultMaxRecordBytes
			}
			flush := api.DefaultFlushAfter
			if s.GetFlushAfter() != nil {
				flush = s.GetFlushAfter().AsDuration()
			}
			c = append(c, strconv.Itoa(maxRec), flush.String())
		}
		return c
	}},
	api.KindLogShipping: {"SERVICE\tENDPOINT\tBUCKET\tBATCH", "\tREGION\tSPOOL", func(o api.Object, _ time.Time, wide bool) []string {
		s := o.(*api.LogShipping).Spec
		batch := uint64(s.GetBatchBytes())
		if batch == 0 {
			batch = api.DefaultBatchBytes
		}
		age := api.DefaultBatchAge
		if s.GetBatchAge() != nil {
			age = s.GetBatchAge().AsDuration()
		}
		c := []string{s.GetService(), s.GetEndpoint(), s.GetBucket(), fmt.Sprintf("%d B or %s", batch, age)}
		if wide {
			region := s.GetRegion()
			if region == "" {
				region = api.DefaultLogShippingRegion
			}
			spool := s.GetSpoolBytes()
			if spool == 0 {
				spool = api.DefaultSpoolBytes
			}
			c = append(c, region, strconv.FormatUint(spool, 10))
		}
		return c
	}},
}

// enumName is an enum value's short name: PROTOCOL_HTTP is "http".
func enumName(full, prefix string) string {
	return strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(full, prefix), "_", "-"))
}

func list(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ",")
}

func rate(rps float64, burst uint32) string {
	r := strconv.FormatFloat(rps, 'f', -1, 64) + "/s"
	if burst != 0 {
		r += " burst " + strconv.Itoa(int(burst))
	}
	return r
}

// matches summarizes a Route's matches: "prefix:/api/ GET|HEAD; exact:/healthz".
func matches(ms []*meshv1.RouteMatch) string {
	var out []string
	for _, m := range ms {
		var parts []string
		switch p := m.GetPath().GetKind().(type) {
		case *meshv1.PathMatch_Exact:
			parts = append(parts, "exact:"+p.Exact)
		case *meshv1.PathMatch_Prefix:
			parts = append(parts, "prefix:"+p.Prefix)
		case *meshv1.PathMatch_Regex:
			parts = append(parts, "regex:"+p.Regex)
		}
		if len(m.GetMethods()) > 0 {
			parts = append(parts, strings.Join(m.GetMethods(), "|"))
		}
		if n := len(m.GetHeaders()); n > 0 {
			parts = append(parts, fmt.Sprintf("%d headers", n))
		}
		if len(parts) == 0 {
			parts = append(parts, "any")
		}
		out = append(out, strings.Join(parts, " "))
	}
	if len(out) == 0 {
		return "any"
	}
	return strings.Join(out, "; ")
}

// age is a duration as kubectl's AGE column shows it: 45s, 12m, 5h, 3d.
func age(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return strconv.Itoa(int(d.Seconds())) + "s"
	case d < 2*time.Hour:
		return strconv.Itoa(int(d.Minutes())) + "m"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d.Hours())) + "h"
	}
	return strconv.Itoa(int(d.Hours()/24)) + "d"
}

// kindOrder sorts objects as api.Kinds orders kinds (Service first).
func kindOrder(k api.Kind) int { return slices.Index(api.Kinds(), k) }
