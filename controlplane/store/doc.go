// Package store is meshd's state: go-memdb tables for indexed reads (the
// cache), made durable by a backend: bbolt (a file in the data dir, the
// default) or etcd (--store etcd://...).
//
// Every write runs in Update. On bbolt it goes to the file first, fsynced,
// before memdb commits, so a crash never loses an acknowledged write and
// never exposes one that was not made durable; on open, memdb is rebuilt
// from the file, whose schema version is checked. On etcd, memdb is this
// replica's cache, loaded from one read of the prefix and fed by a watch;
// an Update reads the cache at a revision and commits its writes in one
// etcd Txn that compares the store's revision key to it, running its
// function again on a conflict. Functions given to Update must therefore
// act only through their transaction.
//
//	st, err := store.Open(store.Config{Path: filepath.Join(dir, "meshd.db")})
//	if err != nil { ... }
//	defer st.Close()
//	err = st.Update(func(tx *store.Txn) error {
//		return tx.Put(store.TableTokens, &store.Token{ID: "abc", ...})
//	})
//
// storetest holds the conformance suite every backend passes.
package store
