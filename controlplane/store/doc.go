// Package store is meshd's state: go-memdb tables for indexed reads, made
// durable by bbolt.
//
// Every write goes to bbolt first and is fsynced before it is applied to
// memdb and acknowledged, so a crash never loses an acknowledged write and
// never exposes one that was not made durable. On open, memdb is rebuilt
// from bbolt, whose schema version is checked.
//
//	st, err := store.Open(store.Config{Path: filepath.Join(dir, "meshd.db")})
//	if err != nil { ... }
//	defer st.Close()
//	err = st.Update(func(tx *store.Txn) error {
//		return tx.Put(store.TableTokens, &store.Token{ID: "abc", ...})
//	})
package store
