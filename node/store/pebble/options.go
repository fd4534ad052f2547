package pebble

import (
	"errors"
	"fmt"
	"strings"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/opentrack/opentrack/internal/options"
)

// Compression algorithms for Options.Compression.
const (
	CompressionZstd   = "zstd"
	CompressionSnappy = "snappy"
	CompressionMinLZ  = "minlz"
	CompressionNone   = "none"
)

// compressionLevels maps Options.Compression to pebble's compression
// settings for each level. zstd is pebble's "Good" settings: MinLZ down to
// L4, zstd level 1 in L5 and level 3 in L6, where nearly all of a grown
// store lives and is written once. Upper levels are rewritten by every
// compaction, and compressing them with zstd cost ingest more CPU than any
// other part of compaction. Index and filter blocks, which nearly every
// read touches, are MinLZ on every level: decompressing a 256 KiB zstd
// index block on a cache miss cost more than the lookup itself (ingest of
// new parcels went from 54k to 124k events/s with the switch, at the same
// 110 bytes per event).
var compressionLevels = map[string]pebbledb.DBCompressionSettings{
	CompressionZstd:   pebbledb.DBCompressionGood,
	CompressionSnappy: pebbledb.UniformDBCompressionSettings(sstable.SnappyCompression),
	CompressionMinLZ:  pebbledb.UniformDBCompressionSettings(sstable.MinLZCompression),
	CompressionNone:   pebbledb.UniformDBCompressionSettings(sstable.NoCompression),
}

// Options tunes the store. Pebble's own defaults stall writers on two
// cores (DESIGN §6); these follow CockroachDB's. The zero value of every
// field means its default, which EnsureDefaults fills in.
type Options struct {
	// CacheSize is the block cache, in bytes. It holds uncompressed blocks
	// and lives outside the Go heap, so it is RSS but not GC work. Pebble
	// counts its memtables against its cache; the store sizes pebble's
	// cache with room for them on top (memtableReserve), so that this is
	// what blocks get. Default 64 MiB.
	CacheSize int64

	// MemTableSize is the size of one memtable, in bytes. Large memtables
	// mean few, large flushes; pebble starts small and grows to this.
	// Default 64 MiB.
	MemTableSize uint64

	// MemTableStopWritesThreshold is how many memtables may queue for
	// flushing before writes stall. Default 4.
	MemTableStopWritesThreshold int

	// L0CompactionThreshold is the L0 read amplification (sublevels) that
	// starts an L0 compaction. Ingest writes all over the key space (hashed
	// event ids, numbers), so what it flushes overlaps most of the level
	// below, which each L0 compaction rewrites. 4 (pebble's default) lets
	// twice as much L0 share each rewrite as CockroachDB's 2, for a little
	// more read amplification: what compactions wrote over 2M events of
	// ingest went from 3.3 to 2.8 GB, and ingest's CPU down by 2 µs an
	// event (node/ingest's rounds benchmark). Default 4.
	L0CompactionThreshold int

	// L0StopWritesThreshold is the L0 read amplification at which writes
	// stall. It is high on purpose: on two cores a stall costs far more
	// than a briefly deep L0. Default 1000.
	L0StopWritesThreshold int

	// LBaseMaxBytes is the target size of the first level below L0, in
	// bytes. Default 64 MiB.
	LBaseMaxBytes int64

	// MaxConcurrentCompactions bounds background compactions. Pebble runs
	// one and goes up to this many when compaction falls behind.
	// Default 2.
	MaxConcurrentCompactions int

	// BlockSize is the target uncompressed size of an sstable data block,
	// in bytes. Larger blocks compress better, but a lookup that misses
	// the cache decompresses a whole block. Default 16 KiB (CockroachDB
	// uses 32 KiB; see doc.go for what each costs).
	BlockSize int

	// IndexBlockSize is the target size of an index block, in bytes; an
	// sstable whose index outgrows it gets a two-level index.
	// Default 256 KiB.
	IndexBlockSize int

	// BloomBitsPerKey sizes the bloom filters that let point lookups (by
	// number, parcel id, event id) skip sstables; about 1% false positives
	// at 10. Every level has them, L6 too: ingest's idempotency check looks
	// up event ids that are almost never stored, and without a filter each
	// such lookup ends in an L6 index and data block (pebble reads L6
	// filters only for iterators that ask, which that check's does).
	// Negative disables them. Default 10.
	BloomBitsPerKey int

	// Compression is the block compression: "zstd", "snappy", "minlz" or
	// "none". Default "zstd" (zstd on the data blocks of L5 and L6, MinLZ
	// elsewhere; see compressionLevels): 111 bytes per stored event against
	// 125 for MinLZ, 129 for snappy and 291 uncompressed, for lookups
	// within 10% of MinLZ's (doc.go has the measurements).
	Compression string

	// BytesPerSync makes sstable writes sync every so many bytes, so the
	// OS never has a large backlog of dirty pages to write at once.
	// Default 512 KiB.
	BytesPerSync int

	// WALBytesPerSync syncs the WAL in the background every so many bytes.
	// Every Append already syncs the WAL before it returns, so the default
	// leaves this off. Default 0 (off).
	WALBytesPerSync int

	// MaxOpenFiles bounds the open sstables, each of which holds a file
	// descriptor and its index in memory. Default 1000.
	MaxOpenFiles int

	// ReadOnly opens the store without writing anything, as a node does on
	// a disk below its free-space reserve: reads are served, every write
	// fails. Default false.
	ReadOnly bool
}

// defaults holds every default of Options; EnsureDefaults takes them
// from here and from nowhere else.
var defaults = Options{
	CacheSize:                   64 << 20,
	MemTableSize:                64 << 20,
	MemTableStopWritesThreshold: 4,
	L0CompactionThreshold:       4,
	L0StopWritesThreshold:       1000,
	LBaseMaxBytes:               64 << 20,
	MaxConcurrentCompactions:    2,
	BlockSize:                   16 << 10,
	IndexBlockSize:              256 << 10,
	BloomBitsPerKey:             10,
	Compression:                 CompressionZstd,
	BytesPerSync:                512 << 10,
	MaxOpenFiles:                1000,
}

// EnsureDefaults fills every zero field with its default and returns o. A
// nil receiver yields a new Options with all defaults.
func (o *Options) EnsureDefaults() *Options {
	o = options.New(o)
	options.Default(&o.CacheSize, defaults.CacheSize)
	options.Default(&o.MemTableSize, defaults.MemTableSize)
	options.Default(&o.MemTableStopWritesThreshold, defaults.MemTableStopWritesThreshold)
	options.Default(&o.L0CompactionThreshold, defaults.L0CompactionThreshold)
	options.Default(&o.L0StopWritesThreshold, defaults.L0StopWritesThreshold)
	options.Default(&o.LBaseMaxBytes, defaults.LBaseMaxBytes)
	options.Default(&o.MaxConcurrentCompactions, defaults.MaxConcurrentCompactions)
	options.Default(&o.BlockSize, defaults.BlockSize)
	options.Default(&o.IndexBlockSize, defaults.IndexBlockSize)
	options.Default(&o.BloomBitsPerKey, defaults.BloomBitsPerKey)
	options.Default(&o.Compression, defaults.Compression)
	options.Default(&o.BytesPerSync, defaults.BytesPerSync)
	options.Default(&o.MaxOpenFiles, defaults.MaxOpenFiles)
	return o
}

// Validate reports every problem with o at once. Call it after
// EnsureDefaults; Open does both.
func (o *Options) Validate() error {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	if o.CacheSize < 0 {
		add("CacheSize %d is negative", o.CacheSize)
	}
	if o.MemTableSize < 1<<20 || o.MemTableSize >= 4<<30 {
		add("MemTableSize %d must be at least 1 MiB and below 4 GiB", o.MemTableSize)
	}
	if o.MemTableStopWritesThreshold < 2 {
		add("MemTableStopWritesThreshold %d must be at least 2", o.MemTableStopWritesThreshold)
	}
	if o.L0CompactionThreshold < 1 {
		add("L0CompactionThreshold %d must be at least 1", o.L0CompactionThreshold)
	}
	if o.L0StopWritesThreshold < o.L0CompactionThreshold {
		add("L0StopWritesThreshold %d must be at least L0CompactionThreshold %d", o.L0StopWritesThreshold, o.L0CompactionThreshold)
	}
	if o.LBaseMaxBytes < 1<<20 {
		add("LBaseMaxBytes %d must be at least 1 MiB", o.LBaseMaxBytes)
	}
	if o.MaxConcurrentCompactions < 1 {
		add("MaxConcurrentCompactions %d must be at least 1", o.MaxConcurrentCompactions)
	}
	if o.BlockSize < 1<<10 || o.BlockSize > sstable.MaximumRestartOffset {
		add("BlockSize %d must be between 1 KiB and %d", o.BlockSize, sstable.MaximumRestartOffset)
	}
	if o.IndexBlockSize < o.BlockSize {
		add("IndexBlockSize %d must be at least BlockSize %d", o.IndexBlockSize, o.BlockSize)
	}
	if o.BloomBitsPerKey > 32 {
		add("BloomBitsPerKey %d is above 32", o.BloomBitsPerKey)
	}
	if _, ok := compressionLevels[o.Compression]; !ok {
		add("Compression %q is not one of zstd, snappy, minlz, none", o.Compression)
	}
	if o.BytesPerSync < 0 {
		add("BytesPerSync %d is negative", o.BytesPerSync)
	}
	if o.WALBytesPerSync < 0 {
		add("WALBytesPerSync %d is negative", o.WALBytesPerSync)
	}
	if o.MaxOpenFiles < 16 {
		add("MaxOpenFiles %d must be at least 16", o.MaxOpenFiles)
	}
	if len(p) > 0 {
		return fmt.Errorf("%w: %s", ErrOptions, strings.Join(p, "; "))
	}
	return nil
}

// ErrOptions means Options failed validation.
var ErrOptions = errors.New("pebble: invalid options")

// memtableReserve is how many memtables' worth of room the store adds to
// pebble's cache. Every memtable reserves its size in the cache: the one
// being written, one being flushed and the one pebble keeps for reuse.
// Without this room, 64 MiB memtables left a 64 MiB cache no room at all:
// every read of ingest went to the file system and paid checksums and
// decompression of whole filter and index blocks (ingest of a growing
// store at 20k events/s, 40% of it in those reads).
const memtableReserve = 3

// pebbleOptions translates o, which has defaults and is valid, for
// pebble.Open.
func (o *Options) pebbleOptions() *pebbledb.Options {
	po := &pebbledb.Options{
		CacheSize:                   o.CacheSize + memtableReserve*int64(o.MemTableSize),
		MemTableSize:                o.MemTableSize,
		MemTableStopWritesThreshold: o.MemTableStopWritesThreshold,
		L0CompactionThreshold:       o.L0CompactionThreshold,
		L0StopWritesThreshold:       o.L0StopWritesThreshold,
		LBaseMaxBytes:               o.LBaseMaxBytes,
		CompactionConcurrencyRange:  func() (int, int) { return 1, o.MaxConcurrentCompactions },
		BytesPerSync:                o.BytesPerSync,
		WALBytesPerSync:             o.WALBytesPerSync,
		MaxOpenFiles:                o.MaxOpenFiles,
		FormatMajorVersion:          pebbledb.FormatNewest,
		Logger:                      quietLogger{},
		ReadOnly:                    o.ReadOnly,
		FS:                          privateFS{vfs.Default},
	}
	// CockroachDB: L0 compactions may run in parallel once L0 is 2 deep.
	po.Experimental.L0CompactionConcurrency = 2
	compression := compressionLevels[o.Compression]
	filter := pebbledb.NoFilterPolicy
	if o.BloomBitsPerKey > 0 {
		filter = bloom.FilterPolicy(o.BloomBitsPerKey)
	}
	for i := range po.Levels {
		l := &po.Levels[i]
		l.BlockSize = o.BlockSize
		l.IndexBlockSize = o.IndexBlockSize
		l.Compression = func() *sstable.CompressionProfile { return compression.Levels[i] }
		l.FilterPolicy = filter
	}
	// Files double in size per level below L0, as in CockroachDB.
	po.TargetFileSizes[0] = 2 << 20
	for i := 1; i < len(po.TargetFileSizes); i++ {
		po.TargetFileSizes[i] = po.TargetFileSizes[i-1] * 2
	}
	po.FlushSplitBytes = po.TargetFileSizes[0]
	po.EnsureDefaults()
	return po
}

// quietLogger drops pebble's informational messages (one per open, flush
// and compaction), which would drown a node's own log, and keeps errors.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any) {}

func (quietLogger) Errorf(format string, args ...any) { pebbledb.DefaultLogger.Errorf(format, args...) }

func (quietLogger) Fatalf(format string, args ...any) { pebbledb.DefaultLogger.Fatalf(format, args...) }
