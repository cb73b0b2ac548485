package route

import "testing"

func BenchmarkMatch(b *testing.B) {
	tbl := benchTable(b)
	for i, req := range benchRequests() {
		b.Run([]string{"first-prefix", "header", "regex", "default"}[i], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				tbl.Match(req)
			}
		})
	}
}

func BenchmarkPickBackend(b *testing.B) {
	routes := benchTable(b).Routes()
	r := routes[len(routes)-1] // 95/5 split
	b.ReportAllocs()
	for b.Loop() {
		r.PickBackend()
	}
}

func BenchmarkBudget(b *testing.B) {
	budget := NewBudget(BudgetConfig{Percent: 20, MinPerSecond: 10})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			budget.Request()
			budget.Withdraw()
		}
	})
}
