package identity

import "minimesh/controlplane/store"

// pruneBatch bounds the records one prune transaction deletes.
const pruneBatch = 5000

// Pruned counts what one Prune removed.
type Pruned struct {
	Certificates int
	Revocations  int
	Issuances    int
	// Tokens is how many tokens had their legacy Issued map moved out.
	Tokens int
}

// Prune deletes what has expired by now: certificate records (an expired
// certificate verifies nowhere, so neither revocation nor a rotation needs
// its record; rotation waits only for unexpired ones), rows of the
// revocations table past the NotAfter of the certificate they revoke, and
// token issuances (a Bootstrap repeated with an expired SVID's key is a new
// issuance anyway). A token's legacy Issued map (data files from before
// TableIssuances) moves into issuance records.
func (a *Authority) Prune() (Pruned, error) {
	now := a.cfg.Clock.Now()
	var total Pruned
	// At most what one transaction may write on this store (etcd: 120).
	batch := min(pruneBatch, a.cfg.Store.MaxWrites())
	for {
		var n Pruned
		// A singleton: the leader prunes, fenced on its election.
		err := a.cfg.Store.UpdateAsLeader(func(tx *store.Txn) error {
			n = Pruned{}
			budget := batch
			del := func(tbl string, expired func(store.Record) bool, count *int) error {
				recs, err := tx.List(tbl, "id")
				if err != nil {
					return err
				}
				for _, rec := range recs {
					if budget == 0 {
						return nil
					}
					if expired(rec) {
						if err := tx.Delete(tbl, rec.Key()); err != nil {
							return err
						}
						*count++
						budget--
					}
				}
				return nil
			}
			if err := del(store.TableCertificates, func(r store.Record) bool { return !now.Before(r.(*store.Certificate).NotAfter) }, &n.Certificates); err != nil {
				return err
			}
			if err := del(store.TableRevocations, func(r store.Record) bool { return !now.Before(r.(*store.Revocation).NotAfter) }, &n.Revocations); err != nil {
				return err
			}
			toks, err := tx.List(store.TableTokens, "id")
			if err != nil {
				return err
			}
			for _, rec := range toks {
				if budget == 0 {
					break
				}
				if tok := rec.(*store.Token); len(tok.Issued) > 0 {
					next := cloneToken(tok)
					if err := migrateIssued(tx, next); err != nil {
						return err
					}
					if err := tx.Put(store.TableTokens, next); err != nil {
						return err
					}
					n.Tokens++
					budget--
				}
			}
			return del(store.TableIssuances, func(r store.Record) bool { return !now.Before(r.(*store.TokenIssuance).NotAfter) }, &n.Issuances)
		})
		if err != nil {
			return total, err
		}
		total.Certificates += n.Certificates
		total.Revocations += n.Revocations
		total.Issuances += n.Issuances
		total.Tokens += n.Tokens
		if n.Certificates+n.Revocations+n.Issuances+n.Tokens < batch {
			break
		}
	}
	if total != (Pruned{}) {
		a.cfg.Logger.Info("pruned expired identity records", "certificates", total.Certificates, "revocations", total.Revocations, "issuances", total.Issuances, "tokens_migrated", total.Tokens)
	}
	return total, nil
}

// PruneIfDue runs Prune when PruneEvery has passed since the last one
// (meshd's maintenance tick calls it); failures are logged.
func (a *Authority) PruneIfDue() {
	a.pruneMu.Lock()
	defer a.pruneMu.Unlock()
	now := a.cfg.Clock.Now()
	if !a.lastPrune.IsZero() && now.Sub(a.lastPrune) < a.cfg.PruneEvery && now.After(a.lastPrune) {
		return
	}
	a.lastPrune = now
	if _, err := a.Prune(); err != nil {
		a.cfg.Logger.Warn("could not prune expired identity records", "error", err)
	}
}
