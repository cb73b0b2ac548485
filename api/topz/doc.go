// Package topz is the wire form of a proxy's topz and procz answers: the
// JSON a proxy serves on its admin port (GET /topz, GET /procz/{pid}) and
// sends back through meshd for AdminService.ProxyQuery, and their plain
// text form. mesh-proxy fills these types (dataplane/topz reads /proc);
// `meshctl top` and `meshctl procz` decode the JSON and print it with
// WriteTable and WriteProcess. It imports nothing of the data plane, so
// meshctl does not either.
//
// The text is for a terminal and what it prints came from a proxy, which
// could answer anything: every string is escaped whole (termsafe), so no
// control or bidi character reaches the operator's terminal and no value
// makes a row of its own.
//
//	var tab topz.Table
//	if err := json.Unmarshal(answer, &tab); err != nil {
//		return err
//	}
//	topz.WriteTable(os.Stdout, tab)
package topz
