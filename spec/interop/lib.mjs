// Shared OpenTrack building blocks for JavaScript: strict DAG-CBOR decoding
// with the OpenTrack rules (spec section 2), CIDs and links (section 3), the
// record and message schemas and validation (sections 4 and 8), COSE_Sign1
// with Ed25519 (section 5), chain verification (section 6), framing
// (section 7) and tracking numbers (section 10).
//
// verify.mjs runs the test vectors through these functions; track-client.mjs
// uses them to talk to a live node. Like verify.mjs, this module shares no
// code with the Go reference implementation. Every rejection is a
// VectorError whose `code` is an error code of spec section 15.4.

import crypto from 'node:crypto'
import * as dagCbor from '@ipld/dag-cbor'
import * as cborg from 'cborg'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { base58btc } from 'multiformats/bases/base58'
import * as Digest from 'multiformats/hashes/digest'

// ---------------------------------------------------------------------------
// Errors. Every rejection carries an OpenTrack error code (the vocabulary of
// the vectors' "error" field) and the layer that produced it, so the report
// can say whether the library or an OpenTrack rule caught it.

export class VectorError extends Error {
  constructor (code, message, layer) {
    super(message)
    this.code = code
    this.layer = layer
  }
}

export function fail (code, message, layer = 'opentrack') {
  throw new VectorError(code, message, layer)
}

// ---------------------------------------------------------------------------
// Constants from the spec.

export const DAG_CBOR = 0x71
export const SHA2_256 = 0x12
export const MAX_DEPTH = 16
export const MAX_ITEMS = 16384
export const MAX_EVENT_SIZE = 4096
export const MIN_EVENT_TIME = 946684800000 // 2000-01-01T00:00:00Z in Unix ms
export const MAX_NUMBERS_PER_REQUEST = 100
export const MAX_WATCH_NUMBERS = 10000
export const MAX_EVENTS_PER_RESULT = 1000
export const MAX_CURSOR_LEN = 128
export const MAX_MESSAGE_LEN = 256
export const MAX_GRANT_SIZE = 16 << 10
export const MAX_REGISTRY_SIZE = 1 << 20
export const MAX_GRANT_NUMBERS = 500
export const KEY_ID_LEN = 16

export const CONTENT = {
  head: 'application/opentrack-head+cbor',
  registry: 'application/opentrack-registry+cbor',
  grant: 'application/opentrack-grant+cbor'
}
export const MAX_SIGNED = { [CONTENT.head]: 1024, [CONTENT.grant]: MAX_GRANT_SIZE, [CONTENT.registry]: MAX_REGISTRY_SIZE }

// Appendix A (spec/status.md): every status and its reason codes.
export const FACILITY = ['sorting_centre', 'delivery_depot', 'office_of_exchange', 'airport']
export const VOCABULARY = {
  info_received: ['label_created', 'pickup_scheduled'],
  picked_up: ['collected', 'dropped_off', 'dropped_off_locker'],
  in_transit: ['by_road', 'by_air', 'by_rail', 'by_sea'],
  arrived_at_facility: FACILITY,
  departed_facility: FACILITY,
  customs_hold: ['duties_unpaid', 'documents_missing', 'inspection', 'prohibited_item'],
  customs_cleared: ['no_duties_due', 'duties_paid', 'duties_due_on_delivery'],
  out_for_delivery: ['first_attempt', 'redelivery'],
  delivery_attempted: ['recipient_absent', 'address_incorrect', 'refused', 'business_closed', 'access_denied', 'rescheduled'],
  available_for_pickup: ['locker', 'post_office', 'service_point', 'depot'],
  delivered: ['to_recipient', 'to_neighbour', 'to_safe_place', 'to_locker', 'to_reception', 'signed', 'collected'],
  returned_to_sender: ['refused', 'unclaimed', 'undeliverable', 'address_incorrect', 'customs_refused'],
  exception: ['damaged', 'lost', 'delayed', 'weather', 'address_incorrect', 'held_by_carrier', 'security', 'missorted'],
  cancelled: ['by_sender', 'by_carrier', 'never_received']
}

export const DETAIL_FIELDS = ['pod', 'courier_name', 'courier_phone', 'recipient_name', 'recipient_phone', 'recipient_address']

// ---------------------------------------------------------------------------
// Small helpers.

export const hex = (s) => new Uint8Array(Buffer.from(s, 'hex'))
export const toHex = (b) => Buffer.from(b).toString('hex')
export const bytesEqual = (a, b) => a.length === b.length && Buffer.from(a).equals(Buffer.from(b))
export const utf8Len = (s) => Buffer.byteLength(s, 'utf8')
export const isBytes = (v) => v instanceof Uint8Array
export const isLink = (v) => v !== null && typeof v === 'object' && CID.asCID(v) !== null
export const isPlainMap = (v) => v !== null && typeof v === 'object' && !Array.isArray(v) && !isBytes(v) && !isLink(v)
export const strictUTF8 = new TextDecoder('utf-8', { fatal: true })

// A ctx that drops the notes verify.mjs prints under -v.
export const NO_NOTES = { note () {} }

export async function cidOf (bytes) {
  return CID.create(1, DAG_CBOR, await sha256.digest(bytes))
}

export function keyId (pub) {
  return crypto.createHash('sha256').update(pub).digest().subarray(0, KEY_ID_LEN)
}

// ---------------------------------------------------------------------------
// Strict decoding.
//
// decodeStrict runs three independent layers and records what each said:
//   1. @ipld/dag-cbor decode (strict: shortest ints, no indefinite lengths,
//      no duplicate keys, only tag 42, text keys, no trailing bytes);
//   2. OpenTrack's extra rules over cborg's token stream, for what the
//      decoded JavaScript value cannot show: floats (1.0 decodes as 1),
//      undefined (@ipld/dag-cbor coerces it to null), map key order
//      (the decoder does not check it), nesting depth, tags other than 42,
//      and links that are not CIDv1 dag-cbor sha2-256;
//   3. re-encoding with @ipld/dag-cbor and requiring the same bytes.

export function libraryCode (message) {
  if (/more bytes than necessary/.test(message)) return 'non_canonical'
  if (/indefinite length|unexpected break/.test(message)) return 'indefinite_length'
  if (/repeat map key/.test(message)) return 'duplicate_key'
  if (/tag not supported/.test(message)) return 'foreign_tag'
  if (/CID|multihash|varint/i.test(message)) return 'bad_cid'
  return 'malformed'
}

export function decodeStrict (bytes, ctx = NO_NOTES, what = 'cbor') {
  let value
  let libError = null
  try {
    value = dagCbor.decode(bytes)
  } catch (e) {
    libError = e
  }
  let ruleError = null
  try {
    checkRules(bytes)
  } catch (e) {
    ruleError = e instanceof VectorError ? e : new VectorError('malformed', e.message, 'OpenTrack encoding rule')
  }
  if (libError) {
    ctx.note(`${what}: @ipld/dag-cbor decode rejects: ${libError.message}` +
      (ruleError ? ` (OpenTrack rules also reject: ${ruleError.code})` : ''))
    // The library reads a float's argument before it can tell that a
    // truncated one is a float; the rule scan judges it by its initial
    // byte first, as spec 2.2 orders.
    if (ruleError && ruleError.code === 'float') throw ruleError
    throw new VectorError(libraryCode(libError.message), libError.message, '@ipld/dag-cbor decode')
  }
  ctx.note(`${what}: @ipld/dag-cbor decode accepts`)
  if (ruleError) throw ruleError
  const again = dagCbor.encode(value)
  if (!bytesEqual(again, bytes)) {
    fail('non_canonical', `re-encoding with @ipld/dag-cbor gives different bytes (${again.length} vs ${bytes.length})`, '@ipld/dag-cbor round-trip')
  }
  return value
}

export const RULE = 'OpenTrack encoding rule'

export function checkRules (bytes) {
  // allowBigInt: DAG-CBOR has the full 64-bit integer range; the tokenizer's
  // default would refuse anything past Number.MAX_SAFE_INTEGER.
  const tk = new cborg.Tokenizer(bytes, { retainStringBytes: true, allowBigInt: true })
  ruleItem(tk, 0)
  if (!tk.done()) fail('malformed', `${bytes.length - tk.pos()} trailing bytes`, RULE)
}

export function nextToken (tk) {
  if (tk.done()) fail('malformed', 'unexpected end of input', RULE)
  return tk.next()
}

// A major-type-7 item is judged by its initial byte alone (spec 2.2): no
// argument is read, so neither truncation nor shortest form applies.
export function simpleByte (ib, at) {
  if (ib === 0xf7) fail('malformed', `undefined (0xf7) at offset ${at} is not in the data model`, RULE)
  if (ib === 0xf8) fail('malformed', `simple value in the one-byte form (0xf8) at offset ${at}`, RULE)
  if (ib >= 0xf9 && ib <= 0xfb) fail('float', `floating-point value at offset ${at}: OpenTrack records carry no floats`, RULE)
  if (ib >= 0xfc && ib <= 0xfe) fail('malformed', `reserved additional information in 0x${ib.toString(16)} at offset ${at}`, RULE)
  if (ib === 0xff) fail('indefinite_length', `stray break at offset ${at}`, RULE)
}

export function ruleItem (tk, depth) {
  const at = tk.pos()
  if (!tk.done()) simpleByte(tk.data[at], at)
  const t = nextToken(tk)
  switch (t.type.name) {
    case 'uint': case 'negint': case 'bytes': case 'true': case 'false': case 'null':
      return
    case 'string':
      try {
        strictUTF8.decode(t.byteValue)
      } catch {
        fail('malformed', `invalid UTF-8 in text at offset ${at}`, RULE)
      }
      return
    case 'float':
      fail('float', `floating-point value ${t.value} at offset ${at}: OpenTrack records carry no floats`, RULE)
      break
    case 'undefined':
      fail('malformed', `undefined (0xf7) at offset ${at} is not in the data model`, RULE)
      break
    case 'break':
      fail('indefinite_length', `stray break at offset ${at}`, RULE)
      break
    case 'array':
    case 'map': {
      if (t.value === Infinity) fail('indefinite_length', `indefinite-length ${t.type.name} at offset ${at}`, RULE)
      if (depth + 1 > MAX_DEPTH) fail('too_deep', `more than ${MAX_DEPTH} levels of nesting`, RULE)
      if (t.value > MAX_ITEMS) fail('too_large', `${t.type.name} of ${t.value} items`, RULE)
      if (t.type.name === 'array') {
        for (let i = 0; i < t.value; i++) ruleItem(tk, depth + 1)
        return
      }
      let prev = null
      for (let i = 0; i < t.value; i++) {
        const kAt = tk.pos()
        const k = nextToken(tk)
        if (k.type.name !== 'string') fail('malformed', `map key of type ${k.type.name} at offset ${kAt}: keys must be text`, RULE)
        const key = k.byteValue
        try {
          strictUTF8.decode(key)
        } catch {
          fail('malformed', `invalid UTF-8 in map key at offset ${kAt}`, RULE)
        }
        if (prev !== null) {
          const c = compareKeys(prev, key)
          if (c === 0) fail('duplicate_key', `duplicate map key "${k.value}"`, RULE)
          if (c > 0) fail('non_canonical', `map key "${k.value}" after "${Buffer.from(prev)}": keys are ordered length-first, then bytewise`, RULE)
        }
        prev = key
        ruleItem(tk, depth + 1)
      }
      return
    }
    case 'tag': {
      if (t.value !== 42) fail('foreign_tag', `tag ${t.value} at offset ${at}: only tag 42 is allowed`, RULE)
      const c = nextToken(tk)
      if (c.type.name !== 'bytes') fail('bad_cid', 'tag 42 must wrap a byte string', RULE)
      checkLinkBytes(c.value)
      return
    }
    default:
      fail('malformed', `unexpected ${t.type.name} at offset ${at}`, RULE)
  }
}

export function compareKeys (a, b) {
  if (a.length !== b.length) return a.length < b.length ? -1 : 1
  return Buffer.compare(Buffer.from(a), Buffer.from(b))
}

// A record link: 0x00 multibase prefix, then a CIDv1 dag-cbor sha2-256.
export function checkLinkBytes (b) {
  if (b.length < 2 || b[0] !== 0x00) fail('bad_cid', 'tag 42 content must start with the 0x00 multibase prefix', RULE)
  let cid
  try {
    cid = CID.decode(b.subarray(1))
  } catch (e) {
    fail('bad_cid', `tag 42 content is not a CID: ${e.message}`, RULE)
  }
  checkRecordCID(cid, RULE)
}

export function checkRecordCID (cid, layer) {
  if (cid.version !== 1 || cid.code !== DAG_CBOR || cid.multihash.code !== SHA2_256 || cid.multihash.size !== 32) {
    fail('bad_cid', `link ${cid} is CIDv${cid.version} codec 0x${cid.code.toString(16)} hash 0x${cid.multihash.code.toString(16)}; want CIDv1 dag-cbor sha2-256`, layer)
  }
}

// ---------------------------------------------------------------------------
// Schemas: field name -> [type, presence]. Presence is 'req' (always
// present), 'opt' (omitted when empty: present-but-empty is non-canonical)
// or 'ptr' (optional, and any present value is fine, zero included).

export const arr = (of) => ({ arr: of })
export const mapOf = (of) => ({ map: of })
export const obj = (name, fields) => ({ obj: fields, name })

export const HANDOFF = obj('handoff', { carrier: ['str', 'req'], number: ['str', 'req'] })
export const LOCATION = obj('location', {
  country: ['str', 'req'],
  locode: ['str', 'opt'],
  city: ['str', 'opt'],
  facility: ['str', 'opt'],
  lat_e6: ['int', 'ptr'],
  lon_e6: ['int', 'ptr']
})
export const EVENT = obj('event', {
  carrier: ['str', 'req'],
  number: ['str', 'req'],
  seq: ['uint', 'req'],
  time: ['int', 'req'],
  status: ['str', 'req'],
  reason: ['str', 'opt'],
  location: [LOCATION, 'req'],
  description: ['str', 'opt'],
  lang: ['str', 'opt'],
  prev: ['link', 'ptr'],
  eta: ['int', 'opt'],
  handoff: [HANDOFF, 'ptr'],
  ext: [mapOf('any'), 'opt']
})
export const HEAD = obj('head', {
  carrier: ['str', 'req'],
  number: ['str', 'req'],
  seq: ['uint', 'req'],
  head: ['link', 'req'],
  time: ['int', 'req']
})
export const SCHEME = obj('scheme', {
  kind: ['str', 'req'],
  pattern: ['str', 'opt'],
  check: ['str', 'opt'],
  countries: [arr('str'), 'opt'],
  products: [arr('str'), 'opt']
})
export const REGISTRY = obj('registry', {
  seq: ['uint', 'req'],
  issued: ['int', 'req'],
  not_before: ['int', 'req'],
  not_after: ['int', 'req'],
  carriers: [arr(obj('carrier', {
    code: ['str', 'req'],
    name: ['str', 'req'],
    country: ['str', 'req'],
    keys: [arr(obj('key', { key: ['bytes', 'req'], not_before: ['int', 'req'], not_after: ['int', 'req'] })), 'req'],
    nodes: [arr(obj('node', { peer: ['str', 'req'], addrs: [arr('str'), 'req'] })), 'req'],
    schemes: [arr(SCHEME), 'req']
  })), 'req']
})
export const GRANT = obj('grant', {
  id: ['str', 'req'],
  carrier: ['str', 'req'],
  holder: ['str', 'req'],
  numbers: [arr('str'), 'opt'],
  audience: ['bool', 'opt'],
  fields: [arr('str'), 'req'],
  issued: ['int', 'req'],
  expires: ['int', 'req']
})
export const TRACK_REQUEST = obj('track_request', {
  queries: [arr(obj('query', { number: ['str', 'req'], known: ['link', 'ptr'] })), 'req'],
  grant: ['bytes', 'opt']
})
export const TRACK_RESPONSE = obj('track_response', {
  results: [arr(obj('result', {
    number: ['str', 'req'],
    code: ['str', 'req'],
    head: ['bytes', 'opt'],
    events: [arr('bytes'), 'opt'],
    more: ['bool', 'opt'],
    details: [mapOf('str'), 'opt'],
    details_error: ['str', 'opt'],
    retry_after: ['uint', 'opt'],
    message: ['str', 'opt']
  })), 'req'],
  error: [obj('error', { code: ['str', 'req'], message: ['str', 'opt'], retry_after: ['uint', 'opt'] }), 'ptr']
})
export const WATCH_REQUEST = obj('watch_request', {
  numbers: [arr('str'), 'opt'],
  audience: ['bool', 'opt'],
  cursor: ['str', 'opt'],
  grant: ['bytes', 'opt']
})
export const WATCH_MESSAGE = obj('watch_message', {
  type: ['str', 'req'],
  cursor: ['str', 'opt'],
  number: ['str', 'opt'],
  head: ['bytes', 'opt'],
  events: [arr('bytes'), 'opt'],
  details: [mapOf('str'), 'opt'],
  details_error: ['str', 'opt'],
  time: ['int', 'opt'],
  code: ['str', 'opt'],
  message: ['str', 'opt'],
  retry_after: ['uint', 'opt']
})
// The fields each watch message type may carry (spec 8.5). WATCH_MESSAGE
// is their union: a key outside it is unknown_field, a key of another
// type invalid_record.
const WATCH_FIELDS = {
  update: ['type', 'cursor', 'number', 'head', 'events', 'details', 'details_error'],
  catchup: ['type', 'cursor', 'message'],
  heartbeat: ['type', 'cursor', 'time'],
  error: ['type', 'code', 'message'],
  status: ['type', 'number', 'code', 'message', 'retry_after']
}
export const INFO = obj('info', {
  carrier: ['str', 'opt'],
  version: ['str', 'req'],
  protocols: [arr('str'), 'req'],
  limits: [obj('limits', {
    max_numbers: ['uint', 'req'],
    max_watch_numbers: ['uint', 'req'],
    max_request: ['uint', 'req'],
    max_response: ['uint', 'req']
  }), 'req'],
  registry_seq: ['uint', 'req'],
  keys: [arr('bytes'), 'opt'],
  registry: ['bytes', 'opt']
})

export const INT64_MIN = -(2n ** 63n)
export const INT64_MAX = 2n ** 63n - 1n
export const UINT64_MAX = 2n ** 64n - 1n

export function isInt (v, min, max) {
  if (typeof v === 'number') return Number.isInteger(v) && BigInt(v) >= min && BigInt(v) <= max
  if (typeof v === 'bigint') return v >= min && v <= max
  return false
}

export function isZero (type, v) {
  if (type === 'str') return v === ''
  if (type === 'int' || type === 'uint') return v === 0 || v === 0n
  if (type === 'bool') return v === false
  if (type === 'bytes') return v.length === 0
  if (type.arr) return v.length === 0
  if (type.map) return Object.keys(v).length === 0
  return false
}

export const SCHEMA = 'OpenTrack schema'

export function checkType (type, v, path) {
  const bad = (want) => fail('invalid_record', `${path}: want ${want}`, SCHEMA)
  if (type === 'any') return
  if (type === 'str') { if (typeof v !== 'string') bad('text'); return }
  if (type === 'uint') { if (!isInt(v, 0n, UINT64_MAX)) bad('an unsigned integer'); return }
  if (type === 'int') { if (!isInt(v, INT64_MIN, INT64_MAX)) bad('a 64-bit integer'); return }
  if (type === 'bool') { if (typeof v !== 'boolean') bad('a boolean'); return }
  if (type === 'bytes') {
    // Spec §2: a value that only coerces to the field's type (an array of
    // small integers for a byte string) is non_canonical, not invalid_record.
    if (Array.isArray(v) && v.every((x) => isInt(x, 0n, 255n))) fail('non_canonical', `${path}: an array where a byte string belongs`, SCHEMA)
    if (!isBytes(v)) bad('a byte string')
    return
  }
  if (type === 'link') { if (!isLink(v)) bad('a link (tag 42)'); return }
  // Spec 2.5: outside ext (a map of 'any'), null is never sent; as an
  // array element or a Details value it decodes as the zero value, which
  // re-encodes differently, so it is non_canonical like null in an
  // optional field.
  const noNull = (x, where) => { if (x === null) fail('non_canonical', `${where}: null is not allowed outside ext`, SCHEMA) }
  if (type.arr) {
    if (!Array.isArray(v)) bad('an array')
    v.forEach((x, i) => { noNull(x, `${path}[${i}]`); checkType(type.arr, x, `${path}[${i}]`) })
    return
  }
  if (type.map) {
    if (!isPlainMap(v)) bad('a map')
    for (const [k, x] of Object.entries(v)) { if (type.map !== 'any') noNull(x, `${path}.${k}`); checkType(type.map, x, `${path}.${k}`) }
    return
  }
  if (type.obj) {
    if (!isPlainMap(v)) bad(`a ${type.name} map`)
    for (const k of Object.keys(v)) {
      if (!Object.hasOwn(type.obj, k)) fail('unknown_field', `${path}: field "${k}" is not defined for ${type.name}`, SCHEMA)
    }
    for (const [k, [ft, presence]] of Object.entries(type.obj)) {
      if (!Object.hasOwn(v, k)) {
        if (presence === 'req') fail('invalid_record', `${path}: required field "${k}" missing`, SCHEMA)
        continue
      }
      checkType(ft, v[k], `${path}.${k}`)
      if (presence === 'opt' && isZero(ft, v[k])) {
        fail('non_canonical', `${path}: optional field "${k}" present with its empty value; it must be omitted`, SCHEMA)
      }
    }
    return
  }
  throw new Error(`verify.mjs: bad schema type ${JSON.stringify(type)}`)
}

// ---------------------------------------------------------------------------
// Field validation (the semantic rules of each record and message).

export const VALID = 'OpenTrack validation'

export function invalid (msg) {
  fail('invalid_record', msg, VALID)
}

export function validCarrierCode (c) {
  return typeof c === 'string' && /^[A-Z][A-Z0-9]{1,15}$/.test(c)
}

export function isNormalized (n) {
  try {
    return normalizeNumber(n) === n
  } catch {
    return false
  }
}

export function validLang (s) {
  if (s.length > 35) return false
  return s.split('-').every((sub, i) => sub.length >= 1 && sub.length <= 8 &&
    (i === 0 ? /^[A-Za-z]+$/ : /^[A-Za-z0-9]+$/).test(sub))
}

export function validPeerId (s) {
  try {
    if (s.startsWith('1') || s.startsWith('Q')) {
      const mh = Digest.decode(base58btc.baseDecode(s))
      return mh.code === 0x00 || mh.code === SHA2_256
    }
    return CID.parse(s).code === 0x72 // libp2p-key
  } catch {
    return false
  }
}

export const big = (v) => BigInt(v)

export function validateEvent (e) {
  if (!validCarrierCode(e.carrier)) invalid(`carrier code ${JSON.stringify(e.carrier)}`)
  if (!isNormalized(e.number)) invalid(`number ${JSON.stringify(e.number)} is not a normalized tracking number`)
  if (big(e.time) < MIN_EVENT_TIME) invalid(`time ${e.time} is before 2000-01-01 or not in Unix ms`)
  if (!Object.hasOwn(VOCABULARY, e.status)) invalid(`unknown status ${JSON.stringify(e.status)}`)
  if (e.reason !== undefined && !VOCABULARY[e.status].includes(e.reason)) invalid(`reason ${JSON.stringify(e.reason)} is not defined for status ${e.status}`)
  const l = e.location
  if (!/^[A-Z]{2}$/.test(l.country)) invalid(`country ${JSON.stringify(l.country)}`)
  if (l.locode !== undefined && (!/^[A-Z]{2}[A-Z2-9]{3}$/.test(l.locode) || !l.locode.startsWith(l.country))) invalid(`locode ${JSON.stringify(l.locode)}`)
  if (l.city !== undefined && utf8Len(l.city) > 128) invalid('city too long')
  if (l.facility !== undefined && utf8Len(l.facility) > 64) invalid('facility too long')
  if ((l.lat_e6 === undefined) !== (l.lon_e6 === undefined)) invalid('lat_e6 and lon_e6 go together')
  if (l.lat_e6 !== undefined && (big(l.lat_e6) < -90000000n || big(l.lat_e6) > 90000000n)) invalid('lat_e6 out of range')
  if (l.lon_e6 !== undefined && (big(l.lon_e6) < -180000000n || big(l.lon_e6) > 180000000n)) invalid('lon_e6 out of range')
  if (e.description !== undefined && utf8Len(e.description) > 512) invalid('description too long')
  if (e.lang !== undefined && !validLang(e.lang)) invalid(`lang ${JSON.stringify(e.lang)}`)
  if (e.lang !== undefined && e.description === undefined) invalid('lang without description')
  if (big(e.seq) === 0n && e.prev !== undefined) invalid('seq 0 must not have prev')
  if (big(e.seq) > 0n && e.prev === undefined) invalid(`seq ${e.seq} must have prev`)
  if (e.eta !== undefined && big(e.eta) < MIN_EVENT_TIME) invalid('eta not in Unix ms')
  if (e.handoff !== undefined) {
    if (!validCarrierCode(e.handoff.carrier)) invalid('handoff.carrier')
    if (!isNormalized(e.handoff.number)) invalid('handoff.number')
  }
  if (e.ext !== undefined) {
    for (const k of Object.keys(e.ext)) {
      const dot = k.indexOf('.')
      if (dot <= 0 || dot === k.length - 1 || utf8Len(k) > 64 || !/^[a-z0-9_-]+$/.test(k.slice(0, dot))) {
        invalid(`ext key ${JSON.stringify(k)} must be "<namespace>.<name>"`)
      }
    }
    // Integers anywhere in ext must fit a signed 64-bit integer.
    const walk = (v) => {
      if (typeof v === 'bigint' || typeof v === 'number') {
        if (!Number.isInteger(Number(v)) || BigInt(v) < INT64_MIN || BigInt(v) > INT64_MAX) invalid(`ext integer ${v} outside the int64 range`)
      } else if (Array.isArray(v)) v.forEach(walk)
      else if (v !== null && typeof v === 'object' && !(v instanceof Uint8Array) && !CID.asCID(v)) Object.values(v).forEach(walk)
    }
    walk(e.ext)
    const size = dagCbor.encode(e.ext).length
    if (size > 2048) fail('too_large', `ext is ${size} bytes, limit 2048`, VALID)
  }
}

export function validateHead (h) {
  if (!validCarrierCode(h.carrier)) invalid('head carrier code')
  if (!isNormalized(h.number)) invalid('head number is not normalized')
  checkRecordCID(CID.asCID(h.head), VALID)
  if (big(h.time) < MIN_EVENT_TIME) invalid('head time not in Unix ms')
}

export function validateRegistry (r) {
  if (big(r.seq) === 0n) invalid('registry seq starts at 1')
  if (big(r.not_after) <= big(r.not_before)) invalid('not_after must be after not_before')
  const owners = new Map()
  for (const c of r.carriers) {
    for (const k of c.keys) {
      const id = toHex(keyId(k.key))
      if (owners.has(id)) invalid(`key ${id} bound to ${owners.get(id)} and ${c.code}`)
      owners.set(id, c.code)
    }
  }
  r.carriers.forEach((c, i) => {
    if (i > 0 && !(r.carriers[i - 1].code < c.code)) invalid('carriers must be sorted by code without duplicates')
    if (!validCarrierCode(c.code)) invalid(`carrier code ${JSON.stringify(c.code)}`)
    if (c.name === '' || utf8Len(c.name) > 128) invalid('carrier name must be 1 to 128 bytes')
    if (!/^[A-Z]{2}$/.test(c.country)) invalid('carrier country')
    if (c.keys.length === 0) invalid(`carrier ${c.code} has no signing key`)
    for (const k of c.keys) {
      if (k.key.length !== 32) invalid('Ed25519 key must be 32 bytes')
      if (big(k.not_after) <= big(k.not_before)) invalid('key not_after must be after not_before')
    }
    for (const n of c.nodes) {
      if (!validPeerId(n.peer)) invalid(`node peer ${JSON.stringify(n.peer)}`)
      // Spec 4.5: checked by its text alone, whatever multiaddr table a
      // receiver has.
      for (const a of n.addrs) {
        if (utf8Len(a) > 256 || !/^(\/[^/\x00-\x20\x7f]+)+$/.test(a)) invalid(`node address ${JSON.stringify(a)}`)
        if (a.split('/').some((c) => c === 'p2p' || c === 'ipfs')) invalid(`node address ${JSON.stringify(a)} carries /p2p/`)
      }
    }
    for (const s of c.schemes) compileScheme(s)
  })
}

export function validateGrant (g) {
  if (!/^[0-9a-f]{32}$/.test(g.id)) invalid('grant id must be 32 lower-case hex characters')
  if (!validCarrierCode(g.carrier)) invalid('grant carrier')
  if (!validPeerId(g.holder)) invalid('grant holder is not a peer ID')
  const numbers = g.numbers ?? []
  if ((g.audience === true) === (numbers.length > 0)) invalid('scope must be numbers or audience')
  if (numbers.length > MAX_GRANT_NUMBERS) invalid('too many numbers')
  for (const n of numbers) if (!isNormalized(n)) invalid(`number ${JSON.stringify(n)} not normalized`)
  if (new Set(numbers).size !== numbers.length) invalid('a number listed twice')
  if (g.fields.length === 0) invalid('no fields')
  for (const f of g.fields) if (!DETAIL_FIELDS.includes(f)) invalid(`unknown detail field ${JSON.stringify(f)}`)
  if (new Set(g.fields).size !== g.fields.length) invalid('a field listed twice')
  if (big(g.expires) <= big(g.issued)) invalid('expires must be after issued')
}

export function validateTrackRequest (m) {
  if (m.queries.length === 0) invalid('no queries')
  if (m.queries.length > MAX_NUMBERS_PER_REQUEST) fail('too_large', `${m.queries.length} numbers, limit ${MAX_NUMBERS_PER_REQUEST}`, VALID)
  if (m.grant !== undefined && m.grant.length > MAX_GRANT_SIZE) fail('too_large', 'grant too large', VALID)
  for (const q of m.queries) {
    if (q.number.length === 0 || utf8Len(q.number) > 80) invalid('query number length')
  }
}

export async function validateTrackResponse (m, ctx) {
  if (m.error !== undefined) {
    if (m.error.code === '' || m.error.code === 'ok') invalid('error without a code')
    if (m.error.message !== undefined && utf8Len(m.error.message) > MAX_MESSAGE_LEN) fail('too_large', 'error message too long', VALID)
    return
  }
  for (const [i, r] of m.results.entries()) {
    if (r.message !== undefined && utf8Len(r.message) > MAX_MESSAGE_LEN) fail('too_large', 'message too long', VALID)
    if (r.code === 'ok' && r.head === undefined) invalid(`result ${i} is ok without a head`)
    if (r.code !== 'ok' && (r.head !== undefined || r.events !== undefined || r.details !== undefined || r.details_error !== undefined)) invalid(`result ${i} carries data with code ${r.code}`)
    checkDetailsError(r, `result ${i}`)
    if ((r.events ?? []).length > MAX_EVENTS_PER_RESULT) fail('too_large', 'too many events', VALID)
    await checkEmbedded(r, ctx, `results[${i}]`)
  }
}

export function validateWatchRequest (m) {
  if ((m.audience === true) === ((m.numbers ?? []).length > 0)) invalid('subscribe to numbers or to the audience')
  if ((m.numbers ?? []).length > MAX_WATCH_NUMBERS) fail('too_large', 'too many numbers', VALID)
  if (m.cursor !== undefined && utf8Len(m.cursor) > MAX_CURSOR_LEN) fail('too_large', 'cursor too long', VALID)
  if (m.grant !== undefined && m.grant.length > MAX_GRANT_SIZE) fail('too_large', 'grant too large', VALID)
}

export async function validateWatchMessage (m, ctx) {
  if ((m.cursor !== undefined && utf8Len(m.cursor) > MAX_CURSOR_LEN) || (m.message !== undefined && utf8Len(m.message) > MAX_MESSAGE_LEN)) {
    fail('too_large', 'cursor or message too long', VALID)
  }
  const allowed = WATCH_FIELDS[m.type]
  if (allowed === undefined) invalid(`unknown watch message type ${JSON.stringify(m.type)}`)
  for (const k of Object.keys(m)) {
    if (m[k] !== undefined && !allowed.includes(k)) invalid(`${m.type} carries ${k}, a field of another type`)
  }
  switch (m.type) {
    case 'update':
      if (!m.cursor || !m.number || !m.head || !m.events) invalid('update needs cursor, number, head and events')
      if (m.events.length > MAX_EVENTS_PER_RESULT) fail('too_large', 'too many events', VALID)
      checkDetailsError(m, 'update')
      await checkEmbedded(m, ctx, 'update')
      break
    case 'catchup':
      if (!m.cursor) invalid('catchup needs a cursor')
      break
    case 'heartbeat':
      if (!m.cursor || m.time === undefined || big(m.time) < MIN_EVENT_TIME) invalid('heartbeat needs a cursor and a time')
      break
    case 'error':
      if (!m.code) invalid('error needs a code')
      break
    case 'status':
      if (!m.number || !m.code || m.code === 'ok') invalid('status needs a number and a code other than ok')
      if (!isNormalized(m.number)) invalid('status number is not normalized')
      break
    default:
      invalid(`unknown watch message type ${JSON.stringify(m.type)}`)
  }
}

export function validateInfo (m) {
  if (m.carrier !== undefined && !validCarrierCode(m.carrier)) invalid('info carrier')
  if (utf8Len(m.version) > 64 || m.protocols.length > 32 || (m.keys ?? []).length > 16) fail('too_large', 'info fields too long', VALID)
}

// A message that carries a signed head and event blocks: beyond what the Go
// vector check does, parse the head's COSE_Sign1 and decode every block as
// an event, so the embedded records are held to the same rules.
export async function checkEmbedded (m, ctx, where) {
  if (m.head !== undefined) {
    const s = parseSigned(m.head, CONTENT.head)
    const h = decodeStrict(s.payload, ctx, `${where}.head payload`)
    checkType(HEAD, h, 'head')
    validateHead(h)
    if (m.number !== undefined && h.number !== m.number) invalid(`${where}: head is for ${h.number}, not ${m.number}`)
  }
  for (const [i, b] of (m.events ?? []).entries()) {
    await decodeEvent(b, ctx, `${where}.events[${i}]`)
  }
}

// ---------------------------------------------------------------------------
// Records.

export function decodeEvent (b, ctx = NO_NOTES, what = 'event') {
  if (b.length > MAX_EVENT_SIZE) fail('too_large', `event is ${b.length} bytes, limit ${MAX_EVENT_SIZE}`, VALID)
  const e = decodeStrict(b, ctx, what)
  checkType(EVENT, e, what)
  validateEvent(e)
  return e
}

export async function expectCID (v, bytes) {
  if (!v.cid) return
  const got = (await cidOf(bytes)).toString()
  if (got !== v.cid) fail('cid_mismatch', `bytes hash to ${got}, vector says ${v.cid}`, 'CID')
}

// ---------------------------------------------------------------------------
// COSE_Sign1 (RFC 9052), tag 18, parsed with cborg.

export const COSE_DECODE = {
  strict: true,
  allowIndefinite: false,
  allowUndefined: false,
  allowNaN: false,
  allowInfinity: false,
  rejectDuplicateMapKeys: true,
  useMaps: true
}

export const COSE = 'COSE_Sign1'

export function parseSigned (bytes, contentType) {
  const max = MAX_SIGNED[contentType]
  if (bytes.length > max) fail('too_large', `signed statement is ${bytes.length} bytes, limit ${max}`, COSE)
  let msg
  try {
    msg = cborg.decode(bytes, { ...COSE_DECODE, tags: { 18: (decode) => ({ sign1: decode() }) } })
  } catch (e) {
    fail('malformed', `COSE_Sign1: ${e.message}`, COSE)
  }
  if (!msg || !Array.isArray(msg.sign1)) fail('malformed', 'not a tagged COSE_Sign1 (tag 18 over an array)', COSE)
  const parts = msg.sign1
  if (parts.length !== 4) fail('malformed', `COSE_Sign1 array of ${parts.length} items, want 4`, COSE)
  const [protectedBytes, unprotected, payload, signature] = parts
  if (!isBytes(protectedBytes)) fail('malformed', 'protected header is not a byte string', COSE)
  if (!(unprotected instanceof Map)) fail('malformed', 'unprotected header is not a map', COSE)
  if (payload === null) fail('malformed', 'detached payload', COSE)
  if (!isBytes(payload)) fail('malformed', 'payload is not a byte string', COSE)
  if (!isBytes(signature)) fail('malformed', 'signature is not a byte string', COSE)
  let prot
  try {
    prot = cborg.decode(protectedBytes, COSE_DECODE)
  } catch (e) {
    fail('malformed', `protected header: ${e.message}`, COSE)
  }
  if (!(prot instanceof Map)) fail('malformed', 'protected header is not a map', COSE)
  if (prot.get(1) !== -8) fail('bad_signature', `algorithm ${prot.get(1)}, want EdDSA (-8)`, COSE)
  if (prot.get(3) !== contentType) fail('wrong_content_type', `content type ${JSON.stringify(prot.get(3))}, want ${contentType}`, COSE)
  const kid = prot.get(4)
  if (!isBytes(kid) || kid.length !== KEY_ID_LEN) fail('bad_signature', `protected header needs a ${KEY_ID_LEN}-byte key id`, COSE)
  if (prot.size !== 3 || unprotected.size !== 0) fail('bad_signature', 'unexpected COSE header parameters', COSE)
  return { protectedBytes, kid, payload, signature, bytes, contentType }
}

// The COSE_Sign1 rebuilt from its parts with cborg, to show that an
// independent encoder produces the same bytes as the Go signer.
export function rebuildSigned (s) {
  const prot = cborg.encode(new Map([[1, -8], [3, s.contentType], [4, s.kid]]))
  const inner = cborg.encode([prot, new Map(), s.payload, s.signature])
  return { prot, full: Uint8Array.from([0xd2, ...inner]) } // 0xd2: tag 18
}

export function verifySignature (s, pub) {
  if (pub.length !== 32) fail('unknown_key', 'public key must be 32 bytes', 'Ed25519')
  if (!bytesEqual(keyId(pub), s.kid)) fail('unknown_key', `key id ${toHex(s.kid)} is not the key offered (${toHex(keyId(pub))})`, 'Ed25519')
  const sigStructure = cborg.encode(['Signature1', s.protectedBytes, new Uint8Array(0), s.payload])
  const key = crypto.createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(pub).toString('base64url') }, format: 'jwk' })
  if (!crypto.verify(null, sigStructure, key, s.signature)) fail('bad_signature', 'Ed25519 signature does not verify', 'Ed25519')
}

export function checkCanonicalCose (s, ctx = NO_NOTES) {
  const { prot, full } = rebuildSigned(s)
  if (!bytesEqual(prot, s.protectedBytes)) fail('non_canonical', 'protected header is not the canonical encoding of {1: -8, 3: ct, 4: kid}', COSE)
  if (!bytesEqual(full, s.bytes)) fail('non_canonical', 'COSE_Sign1 does not rebuild byte-identically with cborg', COSE)
  ctx.note('COSE_Sign1 rebuilds byte-identically with cborg')
}

// ---------------------------------------------------------------------------
// Tracking numbers.

export const NUMBER = 'tracking number'
export const MIN_NUMBER_LEN = 4
export const MAX_NUMBER_LEN = 40

// Only ASCII space, tab, CR and LF are trimmed at the ends (spec: exact set,
// not Unicode white space, so that every implementation agrees).
export const TRIM = /^[ \t\r\n]+|[ \t\r\n]+$/g

export function normalizeNumber (s) {
  const t = s.replace(TRIM, '')
  let out = ''
  for (let i = 0; i < t.length; i++) {
    let c = t[i]
    if (/[A-Z0-9]/.test(c)) {
      // kept
    } else if (/[a-z]/.test(c)) {
      c = c.toUpperCase()
    } else if (' \t-./_'.includes(c)) {
      continue
    } else {
      fail('invalid_number', `character ${JSON.stringify(c)} is not a letter, digit or separator`, NUMBER)
    }
    if (out.length === MAX_NUMBER_LEN) fail('invalid_number', `more than ${MAX_NUMBER_LEN} letters and digits`, NUMBER)
    out += c
  }
  if (out.length < MIN_NUMBER_LEN) fail('invalid_number', `${out.length} letters and digits, need at least ${MIN_NUMBER_LEN}`, NUMBER)
  return out
}

// Check-digit algorithms, over the decimal digits of data (other characters
// are skipped). Each returns the check digit as a one-character string.
export const MOD11_WEIGHTS = [8, 6, 4, 2, 3, 5, 9, 7]
export const CHECK = {
  mod10 (data) {
    const d = digits(data).reverse()
    const sum = d.reduce((s, x, k) => s + (k % 2 === 0 ? 3 * x : x), 0)
    return String((10 - (sum % 10)) % 10)
  },
  luhn (data) {
    const d = digits(data).reverse()
    const sum = d.reduce((s, x, k) => {
      if (k % 2 === 0) { x *= 2; if (x > 9) x -= 9 }
      return s + x
    }, 0)
    return String((10 - (sum % 10)) % 10)
  },
  mod11 (data) {
    const sum = digits(data).reduce((s, x, k) => s + x * MOD11_WEIGHTS[k % 8], 0)
    const c = 11 - (sum % 11)
    return c === 10 ? '0' : c === 11 ? '5' : String(c)
  },
  mod7 (data) {
    return String(digits(data).reduce((r, x) => (r * 10 + x) % 7, 0))
  }
}

export function digits (s) {
  return [...s].filter((c) => c >= '0' && c <= '9').map(Number)
}

// Scheme, in its command-line form: "s10:GB,FR[:RR,C]" or "PATTERN[:ALGO]".
export function parseScheme (str) {
  if (str.startsWith('s10:')) {
    const [countries, products] = str.slice(4).split(/:(.*)/s)
    return { kind: 's10', countries: countries.split(','), products: products === undefined ? undefined : products.split(',') }
  }
  const i = str.lastIndexOf(':')
  if (i < 0) return { kind: 'pattern', pattern: str }
  const check = str.slice(i + 1)
  if (!Object.hasOwn(CHECK, check)) fail('invalid_record', `unknown check algorithm ${JSON.stringify(check)}`, NUMBER)
  return { kind: 'pattern', pattern: str.slice(0, i), check }
}

// The pattern language: atoms (a literal in [A-Z0-9], \d, [0-9], [A-Z],
// [A-Z0-9]), each optionally quantified by {n} or {n,m}, 0 <= n <= m <= 40,
// m >= 1; at most 128 bytes; anchored. It means the same in every regexp
// engine, so once the grammar is checked JavaScript's RegExp runs it.
export function parsePattern (p) {
  const bad = (msg) => fail('invalid_record', `pattern ${JSON.stringify(p)}: ${msg}`, NUMBER)
  if (p === '') bad('empty')
  if (utf8Len(p) > 128) bad('longer than 128 bytes')
  const atoms = []
  let minLen = 0
  let maxLen = 0
  let i = 0
  while (i < p.length) {
    const a = { min: 1, max: 1 }
    const rest = p.slice(i)
    let m
    if (/^[A-Z0-9]/.test(rest)) { a.class = 'lit'; a.lit = rest[0]; i += 1 } else if (rest.startsWith('\\d')) { a.class = 'digit'; i += 2 } else if (rest.startsWith('[0-9]')) { a.class = 'digit'; i += 5 } else if (rest.startsWith('[A-Z]')) { a.class = 'letter'; i += 5 } else if (rest.startsWith('[A-Z0-9]')) { a.class = 'alnum'; i += 8 } else bad(`${JSON.stringify(rest[0])} at byte ${i} is not an atom`)
    if (p[i] === '{') {
      if (!(m = /^\{(0|[1-9][0-9]?)(?:,(0|[1-9][0-9]?))?\}/.exec(p.slice(i)))) bad(`bad quantifier at byte ${i}`)
      const lo = Number(m[1])
      const hi = m[2] === undefined ? lo : Number(m[2])
      if (lo > 40 || hi > 40 || lo > hi || hi === 0) bad(`quantifier {${m[1]}${m[2] === undefined ? '' : ',' + m[2]}} out of range`)
      a.min = lo
      a.max = hi
      i += m[0].length
    }
    minLen += a.min
    maxLen += a.max
    atoms.push(a)
  }
  if (minLen > MAX_NUMBER_LEN || maxLen < MIN_NUMBER_LEN) bad(`matches ${minLen} to ${maxLen} characters, never a number`)
  return atoms
}

export function compileScheme (s) {
  if (s.kind === 's10') {
    if (s.pattern || s.check) invalid('kind s10 takes no pattern or check')
    if (!s.countries || s.countries.length === 0) invalid('kind s10 needs a country')
    s.countries.forEach((c, i) => {
      if (!/^[A-Z]{2}$/.test(c) || s.countries.indexOf(c) !== i) invalid(`country ${JSON.stringify(c)}`)
    })
    ;(s.products ?? []).forEach((p, i) => {
      if (!/^[A-Z]{1,2}$/.test(p) || s.products.indexOf(p) !== i) invalid(`product ${JSON.stringify(p)}`)
    })
    return { ...s, products: s.products ?? [] }
  }
  if (s.kind === 'pattern') {
    const atoms = parsePattern(s.pattern)
    if (s.check !== undefined && !Object.hasOwn(CHECK, s.check)) invalid(`unknown check algorithm ${JSON.stringify(s.check)}`)
    const last = atoms[atoms.length - 1]
    if (s.check && (!(last.class === 'digit' || (last.class === 'lit' && /[0-9]/.test(last.lit))) || last.min === 0)) {
      invalid('with a check algorithm the pattern must end in a digit atom that is not optional')
    }
    if (s.countries || s.products) invalid('kind pattern takes no countries or products')
    return { ...s, re: new RegExp(`^(?:${s.pattern})$`) }
  }
  invalid(`unknown scheme kind ${JSON.stringify(s.kind)}`)
}

export function checkScheme (c, n) {
  if (c.kind === 's10') {
    const shape = /^[A-Z]{2}[0-9]{9}[A-Z]{2}$/.test(n)
    if (!shape || !c.countries.includes(n.slice(11)) || (c.products.length > 0 && !c.products.some((p) => n.startsWith(p)))) {
      fail('no_match', `${n} is not an S10 identifier of ${c.countries}`, NUMBER)
    }
    const want = CHECK.mod11(n.slice(2, 10))
    if (n[10] !== want) fail('bad_check_digit', `S10 ${n} has check digit ${n[10]}, want ${want}`, NUMBER)
    return
  }
  if (!c.re.test(n)) fail('no_match', `${n} does not match ${c.pattern}`, NUMBER)
  if (!c.check) return
  const want = CHECK[c.check](n.slice(0, -1))
  if (n.at(-1) !== want) fail('bad_check_digit', `${n} has check digit ${n.at(-1)}, ${c.check} wants ${want}`, NUMBER)
}

// The libraries themselves, so that users of this module encode and compare
// with the very same instances.
export { CID, dagCbor }

// ---------------------------------------------------------------------------
// Framing (spec section 7): uvarint(len(msg)) || msg.

export const FRAME = 'frame'

export const TRACK_ID = '/opentrack/track/1.0.0'
export const WATCH_ID = '/opentrack/watch/1.0.0'
export const INFO_ID = '/opentrack/info/1.0.0'

// The caps of section 7, per protocol and direction.
export const FRAME_CAPS = {
  [TRACK_ID]: { request: 65536, response: 4194304 },
  [WATCH_ID]: { request: 1048576, response: 4194304 },
  [INFO_ID]: { request: 1024, response: 1048576 + 65536 }
}

// The multiformats unsigned varint: LEB128, least significant group first.
export function encodeUvarint (n) {
  let v = BigInt(n)
  if (v < 0n || v >= 2n ** 63n) throw new RangeError(`uvarint out of range: ${n}`)
  const out = []
  do {
    let b = Number(v & 0x7fn)
    v >>= 7n
    if (v > 0n) b |= 0x80
    out.push(b)
  } while (v > 0n)
  return Uint8Array.from(out)
}

// encodeFrame returns one frame, prefix and body, to send in one write.
export function encodeFrame (msg, cap) {
  if (msg.length === 0) fail('bad_frame', 'empty message', FRAME)
  if (msg.length > cap) fail('frame_too_large', `message of ${msg.length} bytes, cap ${cap}`, FRAME)
  const prefix = encodeUvarint(msg.length)
  const out = new Uint8Array(prefix.length + msg.length)
  out.set(prefix)
  out.set(msg, prefix.length)
  return out
}

// readFrame reads one frame from src under the given cap, in the order of
// section 7, "Reading". src has two methods: readByte() resolves to a byte,
// or null at the end of the input; readExact(n) resolves to at most n bytes,
// fewer only at the end of the input. The result is the message, or null
// for a clean end of the input before the first byte of a frame.
export async function readFrame (src, cap) {
  let n = 0n
  let k = 0
  for (;;) {
    const byte = await src.readByte()
    if (byte === null) {
      if (k === 0) return null
      fail('bad_frame', 'input ends inside the length prefix', FRAME)
    }
    if (k >= 9) fail('bad_frame', 'length prefix longer than 9 bytes', FRAME)
    n |= BigInt(byte & 0x7f) << BigInt(7 * k)
    k++
    if ((byte & 0x80) === 0) {
      if (byte === 0 && k > 1) fail('bad_frame', 'length prefix not minimally encoded', FRAME)
      break
    }
  }
  // The cap is checked before anything is read or allocated for the body.
  if (n > big(cap)) fail('frame_too_large', `length ${n}, cap ${cap}`, FRAME)
  if (n === 0n) fail('bad_frame', 'zero length', FRAME)
  const body = await src.readExact(Number(n))
  if (big(body.length) < n) fail('bad_frame', `${n}-byte frame truncated to ${body.length}`, FRAME)
  return body
}

// BytesReader is a readFrame source over bytes in memory.
export class BytesReader {
  constructor (bytes) {
    this.bytes = bytes
    this.pos = 0
  }

  async readByte () {
    return this.pos < this.bytes.length ? this.bytes[this.pos++] : null
  }

  async readExact (n) {
    const out = this.bytes.subarray(this.pos, this.pos + n)
    this.pos += out.length
    return out
  }

  remaining () {
    return this.bytes.length - this.pos
  }
}

// ---------------------------------------------------------------------------
// Chain verification (spec section 6). h is a verified Head (section 5.8),
// events the event byte strings as received, oldest first. Each function
// returns the decoded events as [{ event, cid, bytes }].

const CHAIN = 'chain'

// Step 3 of section 6.1, from prev (a CID, or null for the genesis) and the
// seq want (a BigInt) that the first event must carry.
async function walkEvents (h, events, prev, want, ctx) {
  const out = []
  let last = prev
  let lastSeq = null
  for (const [i, b] of events.entries()) {
    const e = decodeEvent(b, ctx, `events[${i}]`)
    if (e.carrier !== h.carrier || e.number !== h.number) fail('broken_chain', `event ${i} is ${e.carrier}/${e.number}, head is ${h.carrier}/${h.number}`, CHAIN)
    if (big(e.seq) !== want) fail('broken_chain', `event ${i} has seq ${e.seq}, want ${want}`, CHAIN)
    const link = e.prev === undefined ? null : CID.asCID(e.prev)
    if (prev === null ? link !== null : (link === null || !link.equals(prev))) {
      fail('broken_chain', `event seq ${e.seq} links prev ${link ?? 'none'}, want ${prev ?? 'none'}`, CHAIN)
    }
    last = await cidOf(b)
    prev = last
    lastSeq = e.seq
    want++
    out.push({ event: e, cid: last, bytes: b })
  }
  return { out, last, lastSeq }
}

// Step 4 of section 6.1.
function checkChainEnd (h, last, lastSeq) {
  const head = CID.asCID(h.head)
  if (!last.equals(head) || big(lastSeq) !== big(h.seq)) {
    fail('head_mismatch', `last event is ${last} at seq ${lastSeq}, head is ${head} at seq ${h.seq}`, CHAIN)
  }
  return head
}

// VerifyChain (section 6.1): the full history from seq 0 up to the head.
export async function verifyChain (h, events, ctx = NO_NOTES) {
  if (!events || events.length === 0) fail('head_mismatch', 'no events', CHAIN)
  const { out, last, lastSeq } = await walkEvents(h, events, null, 0n, ctx)
  const head = checkChainEnd(h, last, lastSeq)
  ctx.note(`${events.length} events chain to the signed head ${head}`)
  return out
}

// VerifySuffix (section 6.2): the events after the held head K at seq kseq.
// With no K (null) it is VerifyChain.
export async function verifySuffix (h, K, kseq, events, ctx = NO_NOTES) {
  if (K === null || K === undefined) return verifyChain(h, events, ctx)
  if (events.length === 0) {
    const head = CID.asCID(h.head)
    if (K.equals(head) && big(kseq) === big(h.seq)) return []
    fail('head_mismatch', `no events after ${K} at seq ${kseq}, but the head is ${head} at seq ${h.seq}`, CHAIN)
  }
  const { out, last, lastSeq } = await walkEvents(h, events, K, big(kseq) + 1n, ctx)
  checkChainEnd(h, last, lastSeq)
  return out
}

// VerifyPage (section 6.3): one page of a history with more: true, after K
// at kseq, or from the genesis with no K. The events are provisional.
export async function verifyPage (h, K, kseq, events, ctx = NO_NOTES) {
  if (events.length === 0) fail('head_mismatch', 'a page holds at least one event', CHAIN)
  const start = K === null || K === undefined ? [null, 0n] : [K, big(kseq) + 1n]
  const { out, lastSeq } = await walkEvents(h, events, start[0], start[1], ctx)
  if (big(lastSeq) >= big(h.seq)) fail('head_mismatch', `a page ends at seq ${lastSeq}, not short of the head at seq ${h.seq}`, CHAIN)
  return out
}

// ---------------------------------------------------------------------------
// A client's view of a signed head (section 5.8).

export const MAX_FUTURE_SKEW_MS = 300000

// openHead parses and verifies a signed head against the carrier keys
// offered (raw 32-byte Ed25519 public keys), and checks that it is about
// the carrier and the normalized number that were queried (step 6).
// Key windows are not checked: a bare key list has none.
export function openHead (bytes, keys, { carrier, number, now = Date.now(), ctx = NO_NOTES } = {}) {
  const s = parseSigned(bytes, CONTENT.head)
  const h = decodeStrict(s.payload, ctx, 'head payload')
  checkType(HEAD, h, 'head')
  validateHead(h)
  const key = keys.find((k) => k.length === 32 && bytesEqual(keyId(k), s.kid))
  if (key === undefined) fail('unknown_key', `head signed with key id ${toHex(s.kid)}, which is none of the ${keys.length} carrier key(s) held`, 'key lookup')
  verifySignature(s, key)
  if (big(h.time) > big(now) + big(MAX_FUTURE_SKEW_MS)) fail('expired', `head time ${h.time} is more than 5 minutes ahead of the clock (${now})`, 'validity')
  if (carrier !== undefined && h.carrier !== carrier) fail('wrong_carrier', `head is signed for carrier ${h.carrier}, queried ${carrier}`, 'head')
  if (number !== undefined && h.number !== number) fail('head_mismatch', `head is for number ${h.number}, queried ${number}`, 'head')
  return { s, h, key, head: CID.asCID(h.head) }
}

// ---------------------------------------------------------------------------
// Messages on the wire (sections 2.6 and 8): decode, and the checks that
// sections 8.4 and 8.6 ask of a client.

// decodeMessage decodes bytes as the message of the given schema:
// section 2.2, the schema mapping of 2.5 and the byte-exact check of 2.4.
export function decodeMessage (bytes, schema, what = schema.name) {
  const m = decodeStrict(bytes, NO_NOTES, what)
  checkType(schema, m, what)
  return m
}

// A details error code (section 8.3): at most 32 bytes, never beside
// details. An unknown code is valid: details withheld.
export const MAX_DETAILS_ERROR_LEN = 32
export function checkDetailsError (m, where) {
  if (m.details_error === undefined) return
  if (utf8Len(m.details_error) > MAX_DETAILS_ERROR_LEN) fail('too_large', `${where}: details_error longer than ${MAX_DETAILS_ERROR_LEN} bytes`, VALID)
  if (m.details !== undefined) invalid(`${where}: details_error ${JSON.stringify(m.details_error)} beside details`)
}

// Details (section 4.7): known field names, values of 1 to 512 bytes.
export function checkDetails (d, path = 'details') {
  for (const [k, v] of Object.entries(d)) {
    if (!DETAIL_FIELDS.includes(k)) invalid(`${path}: unknown field ${JSON.stringify(k)}`)
    if (v === '' || utf8Len(v) > 512) invalid(`${path}.${k}: value must be 1 to 512 bytes`)
  }
}

// The checks of section 8.4, "A client MUST check", on a decoded
// TrackResponse to a request of nQueries queries.
export function checkTrackResponse (m, nQueries) {
  if (m.error !== undefined) {
    if (m.results.length !== 0) invalid(`response carries an error (${m.error.code}) and ${m.results.length} results`)
    if (m.error.code === '' || m.error.code === 'ok') invalid(`request-level error with code ${JSON.stringify(m.error.code)}`)
    if (m.error.message !== undefined && utf8Len(m.error.message) > MAX_MESSAGE_LEN) fail('too_large', 'error message longer than 256 bytes', VALID)
    return
  }
  if (m.results.length !== nQueries) invalid(`${m.results.length} results to ${nQueries} queries`)
  for (const [i, r] of m.results.entries()) {
    if (r.message !== undefined && utf8Len(r.message) > MAX_MESSAGE_LEN) fail('too_large', `results[${i}]: message longer than 256 bytes`, VALID)
    if (r.code === '') invalid(`results[${i}]: empty code`)
    if (r.details !== undefined) checkDetails(r.details, `results[${i}].details`)
    if (r.code === 'ok' && r.head === undefined) invalid(`results[${i}]: ok without a head`)
    if (r.code !== 'ok' && (r.head !== undefined || r.events !== undefined || r.details !== undefined || r.details_error !== undefined)) invalid(`results[${i}]: code ${r.code} with a head, events, details or a details error`)
    checkDetailsError(r, `results[${i}]`)
    if ((r.events ?? []).length > MAX_EVENTS_PER_RESULT) fail('too_large', `results[${i}]: ${r.events.length} events, limit ${MAX_EVENTS_PER_RESULT}`, VALID)
  }
}

// The checks of section 8.6 on a decoded Info, in the order given there.
export const V1_LIMITS = { max_numbers: 100, max_watch_numbers: 10000, max_request: 65536, max_response: 4194304 }

export function checkInfo (m) {
  if (m.carrier !== undefined && !validCarrierCode(m.carrier)) invalid(`info carrier ${JSON.stringify(m.carrier)}`)
  if (utf8Len(m.version) > 64) fail('too_large', 'info version longer than 64 bytes', VALID)
  if (m.protocols.length > 32) fail('too_large', `info lists ${m.protocols.length} protocols, limit 32`, VALID)
  if ((m.keys ?? []).length > 16) fail('too_large', `info lists ${m.keys.length} keys, limit 16`, VALID)
  for (const p of m.protocols) {
    if (!p.startsWith('/') || utf8Len(p) > 128) invalid(`protocol ID ${JSON.stringify(p)}`)
  }
  for (const k of m.keys ?? []) if (k.length !== 32) invalid(`info key of ${k.length} bytes, want 32`)
  for (const f of ['max_numbers', 'max_request', 'max_response']) {
    if (big(m.limits[f]) < 1n) invalid(`limits.${f} is 0`)
  }
}

// encodeTrackRequest encodes a TrackRequest canonically and checks it the
// way a server will (sections 2.4 and 8.4). queries: [{ number, known? }],
// known being a CID.
export function encodeTrackRequest (queries, grant) {
  const req = { queries: queries.map((q) => (q.known ? { number: q.number, known: q.known } : { number: q.number })) }
  if (grant !== undefined && grant.length > 0) req.grant = grant
  const bytes = dagCbor.encode(req)
  validateTrackRequest(decodeMessage(bytes, TRACK_REQUEST))
  return bytes
}

// The InfoRequest of a client that holds registry edition seq (0: none).
// With no registry, registry_seq is omitted (section 2.5), so the request is
// the empty map, a single byte a0.
export function encodeInfoRequest (seq = 0) {
  return dagCbor.encode(big(seq) === 0n ? {} : { registry_seq: seq })
}
