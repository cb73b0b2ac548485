package store

import (
	"encoding/json"
	"fmt"

	memdb "github.com/hashicorp/go-memdb"
)

// SchemaVersion is written into the data file and checked at open. Bump it
// when a record's encoding changes incompatibly.
const SchemaVersion = 1

// table describes one table: its memdb schema and how its records are
// decoded from bbolt.
type table struct {
	schema *memdb.TableSchema
	decode func([]byte) (Record, error)
}

func decodeJSON[T any, P interface {
	*T
	Record
}](b []byte) (Record, error) {
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	return P(&v), nil
}

var tables = map[string]table{
	TableTokens: {
		schema: &memdb.TableSchema{
			Name: TableTokens,
			Indexes: map[string]*memdb.IndexSchema{
				"id":       {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
				"identity": {Name: "identity", AllowMissing: true, Indexer: &memdb.StringFieldIndex{Field: "SPIFFEID"}},
			},
		},
		decode: decodeJSON[Token],
	},
	TableCertificates: {
		schema: &memdb.TableSchema{
			Name: TableCertificates,
			Indexes: map[string]*memdb.IndexSchema{
				"id":       {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Serial"}},
				"identity": {Name: "identity", AllowMissing: true, Indexer: &memdb.StringFieldIndex{Field: "SPIFFEID"}},
			},
		},
		decode: decodeJSON[Certificate],
	},
	TableResources: {
		schema: &memdb.TableSchema{
			Name: TableResources,
			Indexes: map[string]*memdb.IndexSchema{
				"id":   {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
				"kind": {Name: "kind", Indexer: &memdb.StringFieldIndex{Field: "Kind"}},
				"namespace": {Name: "namespace", Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
					&memdb.StringFieldIndex{Field: "Kind"}, &memdb.StringFieldIndex{Field: "Namespace"},
				}}},
				// An ExternalService belongs to no one service (its Service is
				// empty), so it is not in this index.
				"service": {Name: "service", AllowMissing: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
					&memdb.StringFieldIndex{Field: "Kind"}, &memdb.StringFieldIndex{Field: "Namespace"}, &memdb.StringFieldIndex{Field: "Service"},
				}}},
			},
		},
		decode: decodeJSON[Resource],
	},
	TableDenials: {
		schema: &memdb.TableSchema{
			Name: TableDenials,
			Indexes: map[string]*memdb.IndexSchema{
				"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "SPIFFEID"}},
			},
		},
		decode: decodeJSON[Denial],
	},
	TableRevocations: {
		schema: &memdb.TableSchema{
			Name: TableRevocations,
			Indexes: map[string]*memdb.IndexSchema{
				"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Serial"}},
			},
		},
		decode: decodeJSON[Revocation],
	},
	TableIssuances: {
		schema: &memdb.TableSchema{
			Name: TableIssuances,
			Indexes: map[string]*memdb.IndexSchema{
				"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
			},
		},
		decode: decodeJSON[TokenIssuance],
	},
	TableIntermediates: {
		schema: &memdb.TableSchema{
			Name: TableIntermediates,
			Indexes: map[string]*memdb.IndexSchema{
				"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Serial"}},
			},
		},
		decode: decodeJSON[Intermediate],
	},
	TableProxies: {
		schema: &memdb.TableSchema{
			Name: TableProxies,
			Indexes: map[string]*memdb.IndexSchema{
				"id":       {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "InstanceID"}},
				"identity": {Name: "identity", AllowMissing: true, Indexer: &memdb.StringFieldIndex{Field: "SPIFFEID"}},
				"service":  {Name: "service", AllowMissing: true, Indexer: &memdb.StringFieldIndex{Field: "Service"}},
			},
		},
		decode: decodeJSON[Proxy],
	},
}

func memSchema() *memdb.DBSchema {
	s := &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{
		tableMeta: {Name: tableMeta, Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Key"}},
		}},
		tableCache: {Name: tableCache, Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
		}},
	}}
	for name, t := range tables {
		s.Tables[name] = t.schema
	}
	return s
}

func lookupTable(name string) (table, error) {
	t, ok := tables[name]
	if !ok {
		return table{}, fmt.Errorf("store: unknown table %q", name)
	}
	return t, nil
}
