#!/usr/bin/env node
// Independent check of OpenTrack's test vectors (spec/vectors/vectors.json).
//
// This file shares no code with the Go reference implementation. It uses the
// standard JavaScript libraries where they exist:
//   - @ipld/dag-cbor: strict decode and canonical re-encode of records;
//   - multiformats: CIDs and sha2-256;
//   - cborg: COSE_Sign1 (tag 18, which DAG-CBOR refuses) and the
//     Sig_structure, plus its tokenizer to see what a decoded value hides
//     (float or integer, key order, nesting depth);
//   - node:crypto: Ed25519.
// The OpenTrack rules that go beyond DAG-CBOR (no floats, tag 42 only with a
// CIDv1 dag-cbor sha2-256 link, depth <= 16, no undefined, a light schema of
// each record and message) are implemented from the spec's rules in
// lib.mjs, which this file shares with track-client.mjs; what is left here is
// the reading of each vector type.
//
// Usage: node verify.mjs [-v] [path/to/vectors.json]
// Prints `ok <name>` or `FAIL <name>: reason` per vector, then
// `N passed, M failed`; exits 1 if any failed. With -v, each vector is
// followed by indented notes: which layer rejected an invalid vector and
// what @ipld/dag-cbor alone made of the bytes.

import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import {
  VectorError, fail, hex, toHex, bytesEqual, big, keyId,
  CONTENT, COSE, HEAD, REGISTRY, GRANT,
  TRACK_REQUEST, TRACK_RESPONSE, WATCH_REQUEST, WATCH_MESSAGE, INFO,
  validateTrackRequest, validateTrackResponse, validateWatchRequest, validateWatchMessage, validateInfo,
  decodeStrict, checkType, validateHead, validateRegistry, validateGrant,
  decodeEvent, expectCID, parseSigned, verifySignature, checkCanonicalCose,
  verifyChain, readFrame, BytesReader, FRAME,
  normalizeNumber, NUMBER, parseScheme, compileScheme, checkScheme
} from './lib.mjs'

// ---------------------------------------------------------------------------
// Signed heads as the vectors give them: one public key and its window.

// The key-window rule of a registry key: the statement's signing time must
// lie in [not_before, not_after]. Without a window in the vector, any time.
function checkKeyWindow (v, at) {
  if (!v.key_not_after) return
  const window = `key valid from ${v.key_not_before ?? 0} to ${v.key_not_after}, used at ${at}`
  if (big(at) < big(v.key_not_before ?? 0)) fail('key_not_yet_valid', window, 'key window')
  if (big(at) > big(v.key_not_after)) fail('key_expired', window, 'key window')
}

// Parse and verify a signed head the way a client holding a one-key
// registry for the carrier does: kid, then window, then signature.
function openSignedHead (v, ctx) {
  const s = parseSigned(hex(v.cose), CONTENT.head)
  const h = decodeStrict(s.payload, ctx, 'head payload')
  checkType(HEAD, h, 'head')
  validateHead(h)
  const pub = hex(v.public_key)
  if (!bytesEqual(keyId(pub), s.kid)) fail('unknown_key', `head signed with key id ${toHex(s.kid)}; the carrier's key is ${toHex(keyId(pub))}`, 'key lookup')
  checkKeyWindow(v, h.time)
  verifySignature(s, pub)
  if (v.valid) checkCanonicalCose(s, ctx)
  return { s, h }
}

// ---------------------------------------------------------------------------
// Vector types.

const MESSAGE_SCHEMAS = {
  track_request: [TRACK_REQUEST, validateTrackRequest],
  track_response: [TRACK_RESPONSE, validateTrackResponse],
  watch_request: [WATCH_REQUEST, validateWatchRequest],
  watch_update: [WATCH_MESSAGE, validateWatchMessage],
  info: [INFO, validateInfo]
}

async function check (v, ctx) {
  switch (v.type) {
    case 'event': {
      const b = hex(v.cbor)
      decodeEvent(b, ctx)
      await expectCID(v, b)
      return
    }
    case 'head': {
      const b = hex(v.cbor)
      const h = decodeStrict(b, ctx)
      checkType(HEAD, h, 'head')
      validateHead(h)
      await expectCID(v, b)
      return
    }
    case 'signed_head': {
      const { s } = openSignedHead(v, ctx)
      if (!bytesEqual(s.payload, hex(v.cbor))) fail('non_canonical', 'signed payload differs from cbor', COSE)
      await expectCID(v, hex(v.cbor))
      return
    }
    case 'chain':
      return checkChain(v, ctx)
    case 'registry': {
      const s = parseSigned(hex(v.cose), CONTENT.registry)
      const anchor = hex(v.public_key)
      if (!bytesEqual(keyId(anchor), s.kid)) fail('untrusted_issuer', `registry signed by key id ${toHex(s.kid)}, not the trust anchor ${toHex(keyId(anchor))}`, 'trust anchor')
      verifySignature(s, anchor)
      const r = decodeStrict(s.payload, ctx, 'registry payload')
      checkType(REGISTRY, r, 'registry')
      validateRegistry(r)
      if (big(v.time) < big(r.not_before) || big(v.time) > big(r.not_after)) fail('expired', `registry valid from ${r.not_before} to ${r.not_after}, checked at ${v.time}`, 'validity')
      if (!bytesEqual(s.payload, hex(v.cbor))) fail('non_canonical', 'signed payload differs from cbor', COSE)
      if (v.valid) checkCanonicalCose(s, ctx)
      await expectCID(v, s.payload)
      return
    }
    case 'grant': {
      const s = parseSigned(hex(v.cose), CONTENT.grant)
      const g = decodeStrict(s.payload, ctx, 'grant payload')
      checkType(GRANT, g, 'grant')
      validateGrant(g)
      const pub = hex(v.public_key)
      if (!bytesEqual(keyId(pub), s.kid)) fail('unknown_key', `grant signed with key id ${toHex(s.kid)}, not the carrier's`, 'key lookup')
      verifySignature(s, pub)
      if (big(v.time) < big(g.issued) || big(v.time) > big(g.expires)) fail('expired', `grant valid from ${g.issued} to ${g.expires}, checked at ${v.time}`, 'validity')
      if (g.holder !== v.holder) fail('forbidden', `grant issued to ${g.holder}, presented by ${v.holder}`, 'holder')
      if (!bytesEqual(s.payload, hex(v.cbor))) fail('non_canonical', 'signed payload differs from cbor', COSE)
      if (v.valid) checkCanonicalCose(s, ctx)
      await expectCID(v, s.payload)
      return
    }
    case 'number':
      return checkNumber(v)
    case 'frame':
      return checkFrame(v)
  }
  if (Object.hasOwn(MESSAGE_SCHEMAS, v.type)) {
    const [schema, validate] = MESSAGE_SCHEMAS[v.type]
    const b = hex(v.cbor)
    const m = decodeStrict(b, ctx)
    checkType(schema, m, v.type)
    await validate(m, ctx)
    if (v.valid) await expectCID(v, b)
    return
  }
  fail('unknown_type', `unknown vector type ${JSON.stringify(v.type)}`, 'verify.mjs')
}

async function checkChain (v, ctx) {
  const { h } = openSignedHead(v, ctx)
  await verifyChain(h, (v.events ?? []).map(hex), ctx)
}

// Frames: an unsigned LEB128 varint length (minimal, at most 9 bytes, as
// multiformats' unsigned-varint spec says), then that many bytes.
async function checkFrame (v) {
  const src = new BytesReader(hex(v.input))
  const body = await readFrame(src, v.max)
  if (body === null) fail('bad_frame', 'input ends inside the length prefix', FRAME)
  if (src.remaining() !== 0) fail('bad_frame', 'bytes after the frame', FRAME)
  if (!bytesEqual(body, hex(v.cbor))) fail('bad_frame', 'frame body differs from cbor', FRAME)
}

// ---------------------------------------------------------------------------
// Tracking numbers.

function checkNumber (v) {
  const n = normalizeNumber(v.input)
  if (n !== v.output) fail('wrong_output', `normalized to ${JSON.stringify(n)}, want ${JSON.stringify(v.output)}`, NUMBER)
  checkScheme(compileScheme(parseScheme(v.scheme)), n)
}

// ---------------------------------------------------------------------------
// Driver.

function libraryVersions () {
  const out = []
  for (const name of ['@ipld/dag-cbor', 'cborg', 'multiformats']) {
    try {
      const p = JSON.parse(readFileSync(new URL(`./node_modules/${name}/package.json`, import.meta.url), 'utf8'))
      out.push(`${name} ${p.version}`)
    } catch {
      out.push(`${name} ?`)
    }
  }
  return `${out.join(', ')}, node ${process.versions.node}`
}

async function main () {
  const args = process.argv.slice(2)
  const verbose = args.includes('-v')
  const files = args.filter((a) => a !== '-v')
  const path = files[0] ?? fileURLToPath(new URL('../vectors/vectors.json', import.meta.url))
  const file = JSON.parse(readFileSync(path, 'utf8'))
  if (file.version !== 1) {
    console.error(`${path}: vectors version ${file.version}, this checker reads version 1`)
    process.exit(2)
  }
  if (verbose) console.log(`# ${libraryVersions()}`)
  let passed = 0
  let failed = 0
  for (const v of file.vectors) {
    const notes = []
    const ctx = { note: (s) => notes.push(s) }
    let err = null
    try {
      await check(v, ctx)
    } catch (e) {
      err = e instanceof VectorError ? e : new VectorError('internal', `${e.stack}`, 'verify.mjs')
    }
    let problem = null
    if (v.valid && err) {
      problem = `valid vector rejected: [${err.code}] ${err.message} (${err.layer})`
    } else if (!v.valid && !err) {
      problem = `invalid vector accepted (want ${v.error})`
    } else if (!v.valid && err.code !== v.error) {
      problem = `want error ${v.error}, got ${err.code}: ${err.message} (${err.layer})`
    }
    if (problem) {
      failed++
      console.log(`FAIL ${v.name}: ${problem}`)
    } else {
      passed++
      console.log(`ok ${v.name}`)
    }
    if (verbose) {
      if (!v.valid && err) notes.push(`rejected: ${err.code} by ${err.layer}: ${err.message}`)
      for (const n of notes) console.log(`    ${n}`)
    }
  }
  console.log(`${passed} passed, ${failed} failed`)
  process.exit(failed > 0 ? 1 : 0)
}

await main()
