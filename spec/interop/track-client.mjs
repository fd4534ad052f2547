#!/usr/bin/env node
// A track client for OpenTrack, written from the spec alone (sections 5 to 8)
// with js-libp2p: it shares no code with the Go reference implementation.
//
// Usage: node track-client.mjs [options] <multiaddr-with-/p2p/> <NUMBER>...
//
//   --key HEX      trust this carrier key (raw 32-byte Ed25519 public key, in
//                  hex) instead of the keys the node lists in its Info; may be
//                  repeated
//   --timeout MS   time allowed for dialling and for each response (10000)
//   -v             log the steps to stderr
//
// What it does:
//   1. dials the node over TCP + Noise + yamux (section 8.1); libp2p checks
//      that the peer authenticated by Noise is the one named by /p2p/;
//   2. on /opentrack/info/1.0.0, sends an empty InfoRequest (the frame
//      01 a0) and reads the Info: the carrier code and its keys;
//   3. on one /opentrack/track/1.0.0 stream, sends a TrackRequest with the
//      numbers and reads the TrackResponse; follows `more` pages on the same
//      stream (section 6.3); then sends a second request for the same numbers,
//      with `known` set to each verified head, and reads its response
//      (section 8.4); then closes its write side and waits for the server to
//      end the stream;
//   4. verifies each ok result: the COSE_Sign1 head with the key whose kid
//      matches (section 5.8), its carrier and number, and the event chain
//      from seq 0 to the head (section 6.1); the second answer must be the
//      same head with no events, or events that extend it (section 6.2).
//
// It prints a JSON array, one entry per number:
//   {"number", "code", "verified", "seq", "head", "events", ...}
// where verified is null for a code other than ok, and "error", "message" and
// "recheck" appear when there is something to say. It exits 0 when every ok
// result verified, 1 when one did not, and 2 on a usage, transport or
// protocol error, with the reason on stderr.
//
// Trust: section 8.6 says Info.keys is a hint and that keys come only from
// the registry. A node without a registry gives a client nothing else, so by
// default this client verifies with Info.keys, which proves only that the
// node's answers are consistent with the keys it claims. Pass --key to
// verify against keys obtained out of band.

import './node20.mjs' // first: js-libp2p needs Promise.withResolvers
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { multiaddr } from '@multiformats/multiaddr'
import {
  VectorError, CID, TRACK_ID, INFO_ID, FRAME_CAPS, V1_LIMITS, INFO, TRACK_RESPONSE,
  encodeFrame, readFrame, encodeInfoRequest, encodeTrackRequest, decodeMessage,
  checkInfo, checkTrackResponse, openHead, verifyChain, verifySuffix, verifyPage,
  decodeStrict, normalizeNumber, toHex, big, utf8Len
} from './lib.mjs'

const EXIT_OK = 0
const EXIT_UNVERIFIED = 1
const EXIT_ERROR = 2
const MAX_PAGES = 10000

// A usage, transport or protocol error: exit 2.
class ClientError extends Error {}

let verbose = false
const log = (...a) => { if (verbose) console.error('track-client:', ...a) }

function usage (msg) {
  throw new ClientError(`${msg}\nusage: node track-client.mjs [--key HEX]... [--timeout MS] [-v] <multiaddr-with-/p2p/> <NUMBER>...`)
}

function parseArgs (argv) {
  const o = { keys: [], timeout: 10000, addr: null, numbers: [] }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '-v') verbose = true
    else if (a === '--key') {
      const k = argv[++i] ?? ''
      if (!/^[0-9a-fA-F]{64}$/.test(k)) usage(`--key wants 64 hex digits, got ${JSON.stringify(k)}`)
      o.keys.push(new Uint8Array(Buffer.from(k, 'hex')))
    } else if (a === '--timeout') {
      o.timeout = Number(argv[++i])
      if (!Number.isInteger(o.timeout) || o.timeout <= 0) usage('--timeout wants a positive number of milliseconds')
    } else if (a.startsWith('-') && o.addr === null) usage(`unknown option ${a}`)
    else if (o.addr === null) o.addr = a
    else o.numbers.push(a)
  }
  if (o.addr === null || o.numbers.length === 0) usage('need a multiaddr and at least one number')
  for (const n of o.numbers) {
    if (utf8Len(n) < 1 || utf8Len(n) > 80) usage(`number ${JSON.stringify(n)}: a query number is 1 to 80 bytes (section 8.4)`)
  }
  return o
}

// ---------------------------------------------------------------------------
// Reading frames from a js-libp2p stream. The stream delivers data as
// 'message' events; this turns them into the readByte/readExact source that
// lib.mjs's readFrame wants. A clean end ('end', or 'close' without an
// error) is the end of input; a reset is an error.

class StreamReader {
  constructor (stream, name) {
    this.stream = stream
    this.name = name
    this.chunks = []
    this.buffered = 0
    this.limit = Infinity
    this.ended = false
    this.error = null
    this.wake = null
    stream.addEventListener('message', (e) => {
      const b = e.data instanceof Uint8Array ? e.data : e.data.subarray()
      this.chunks.push(b)
      this.buffered += b.length
      // Only one frame is ever outstanding: a peer that sends far more than
      // the cap allows is not waited for.
      if (this.buffered > this.limit) {
        this.error = new ClientError(`${name}: the node sent ${this.buffered} bytes, more than a frame under the cap`)
        stream.abort(this.error)
      }
      this.signal()
    })
    stream.addEventListener('end', () => { this.ended = true; this.signal() })
    stream.addEventListener('close', (e) => {
      if (e.error && !this.error) this.error = e.error
      this.ended = true
      this.signal()
    })
  }

  signal () {
    const w = this.wake
    this.wake = null
    if (w) w()
  }

  // wait resolves on the next event or at the deadline of the frame read.
  async wait () {
    const left = this.deadline - Date.now()
    if (!(left > 0)) throw new ClientError(`${this.name}: no complete response within ${this.timeout} ms`)
    await new Promise((resolve) => {
      const t = setTimeout(resolve, left)
      this.wake = () => { clearTimeout(t); resolve() }
    })
  }

  async fill (n) {
    while (this.buffered < n) {
      if (this.error) throw new ClientError(`${this.name}: stream failed: ${this.error.message ?? this.error}`)
      if (this.ended) return false
      await this.wait()
    }
    return true
  }

  take (n) {
    const out = new Uint8Array(n)
    let off = 0
    while (off < n) {
      const c = this.chunks[0]
      const k = Math.min(c.length, n - off)
      out.set(c.subarray(0, k), off)
      off += k
      if (k === c.length) this.chunks.shift()
      else this.chunks[0] = c.subarray(k)
    }
    this.buffered -= n
    return out
  }

  async readByte () {
    return (await this.fill(1)) ? this.take(1)[0] : null
  }

  async readExact (n) {
    await this.fill(n)
    return this.take(Math.min(n, this.buffered))
  }

  // next reads one frame under cap within timeout ms: the message, or null
  // when the stream ended cleanly first.
  async next (cap, timeout) {
    this.limit = cap + 16
    this.timeout = timeout
    this.deadline = Date.now() + timeout
    try {
      return await readFrame(this, cap)
    } catch (e) {
      if (e instanceof VectorError) {
        // Section 7: a framing error means the frame boundary is lost.
        this.stream.abort(new Error(`${e.code}: ${e.message}`))
        throw new ClientError(`${this.name}: ${e.code}: ${e.message}`)
      }
      throw e
    } finally {
      this.deadline = undefined
    }
  }
}

async function send (stream, bytes) {
  if (!stream.send(bytes)) await stream.onDrain()
}

// decode turns a received message into a value, or a protocol error.
function decode (bytes, schema, what) {
  try {
    return decodeMessage(bytes, schema, what)
  } catch (e) {
    if (e instanceof VectorError) throw new ClientError(`${what}: ${e.code}: ${e.message}`)
    throw e
  }
}

// ---------------------------------------------------------------------------
// Info (section 8.6).

async function fetchInfo (node, ma, timeout) {
  const stream = await node.dialProtocol(ma, INFO_ID, { signal: AbortSignal.timeout(timeout) })
  const reader = new StreamReader(stream, 'info')
  await send(stream, encodeFrame(encodeInfoRequest(), FRAME_CAPS[INFO_ID].request))
  await stream.close() // one request only; the server still answers
  const body = await reader.next(FRAME_CAPS[INFO_ID].response, timeout)
  if (body === null) throw new ClientError('info: the stream ended without an Info')
  const info = decode(body, INFO, 'info')
  try {
    checkInfo(info)
  } catch (e) {
    if (e instanceof VectorError) throw new ClientError(`info: ${e.code}: ${e.message}`)
    throw e
  }
  // The server answers with one Info frame and closes the stream.
  if (await reader.next(FRAME_CAPS[INFO_ID].response, timeout) !== null) throw new ClientError('info: a second frame after the Info')
  return info
}

// ---------------------------------------------------------------------------
// Track (section 8.4).

class TrackSession {
  constructor (stream, limits, timeout) {
    this.stream = stream
    this.reader = new StreamReader(stream, 'track')
    this.requestCap = Math.min(FRAME_CAPS[TRACK_ID].request, Number(limits.max_request))
    this.responseCap = Math.min(FRAME_CAPS[TRACK_ID].response, Number(limits.max_response))
    this.timeout = timeout
    this.requests = 0
  }

  // request sends one TrackRequest and reads its TrackResponse; a client
  // MUST NOT write a request before it has read the previous response.
  async request (queries) {
    const n = ++this.requests
    const what = `track request ${n}`
    const msg = encodeTrackRequest(queries)
    if (msg.length > this.requestCap) throw new ClientError(`${what}: ${msg.length} bytes, over the node's request cap of ${this.requestCap}`)
    await send(this.stream, encodeFrame(msg, this.requestCap))
    const body = await this.reader.next(this.responseCap, this.timeout)
    if (body === null) throw new ClientError(`${what}: the stream ended before the response`)
    let resp
    try {
      resp = decodeMessage(body, TRACK_RESPONSE, `track response ${n}`)
      checkTrackResponse(resp, queries.length)
    } catch (e) {
      if (e instanceof VectorError) {
        // Section 8.4: a failed response fails the request; reset the stream.
        this.stream.abort(new Error(`${e.code}: ${e.message}`))
        throw new ClientError(`track response ${n}: ${e.code}: ${e.message}`)
      }
      throw e
    }
    if (resp.error !== undefined) {
      const e = resp.error
      throw new ClientError(`track request ${n} refused: ${e.code}${e.message ? ` (${e.message})` : ''}${e.retry_after ? `, retry after ${e.retry_after} ms` : ''}`)
    }
    log(`${what}: ${queries.length} queries, ${body.length}-byte response`)
    return resp.results
  }

  // close closes the write side, then waits for the server to end the
  // stream, as it does once the client has closed its side.
  async close () {
    await this.stream.close()
    const extra = await this.reader.next(this.responseCap, this.timeout)
    if (extra !== null) throw new ClientError('track: a frame the client did not ask for')
  }
}

// The number a result must carry (section 8.4): the query's number
// normalized, or as sent when it does not normalize.
function expectedNumber (typed) {
  try {
    return normalizeNumber(typed)
  } catch {
    return typed
  }
}

function failure (e) {
  if (e instanceof VectorError) return `${e.code}: ${e.message}`
  throw e
}

async function track (session, numbers, carrier, keys) {
  const now = () => Date.now()
  const open = (r, p) => openHead(r.head, keys, { carrier, number: p.number, now: now() })
  const parcels = numbers.map((typed) => ({ typed, number: expectedNumber(typed) }))
  const checkNumbers = (results, list) => results.forEach((r, i) => {
    if (r.number !== list[i].number) throw new ClientError(`result ${i} is for ${JSON.stringify(r.number)}, the query was ${JSON.stringify(list[i].typed)}`)
  })

  // First request: every number, no known heads.
  const first = await session.request(parcels.map((p) => ({ number: p.typed })))
  checkNumbers(first, parcels)
  for (const [i, r] of first.entries()) {
    const p = parcels[i]
    p.code = r.code
    if (r.message !== undefined) p.message = r.message
    if (r.code !== 'ok') continue
    try {
      const { h, head } = open(r, p)
      const events = r.events ?? []
      if (r.more === true) {
        const got = await verifyPage(h, null, null, events)
        p.page = { K: got.at(-1).cid, kseq: got.at(-1).event.seq, count: got.length, genesis: got[0].cid }
      } else {
        const got = await verifyChain(h, events)
        p.held = { K: head, kseq: h.seq, time: h.time, genesis: got[0].cid, count: got.length }
      }
    } catch (e) {
      p.error = failure(e)
    }
  }

  // Pages (section 6.3), on the same stream, until no result has more.
  for (let round = 0; round < MAX_PAGES; round++) {
    const paging = parcels.filter((p) => p.page && !p.error)
    if (paging.length === 0) break
    const results = await session.request(paging.map((p) => ({ number: p.typed, known: p.page.K })))
    checkNumbers(results, paging)
    for (const [i, r] of results.entries()) {
      const p = paging[i]
      try {
        if (r.code !== 'ok') throw new VectorError('head_mismatch', `page request answered ${r.code}`, 'paging')
        const { h, head } = open(r, p)
        const events = r.events ?? []
        if (r.more === true) {
          const got = await verifyPage(h, p.page.K, p.page.kseq, events)
          p.page = { ...p.page, K: got.at(-1).cid, kseq: got.at(-1).event.seq, count: p.page.count + got.length }
        } else {
          const got = await verifySuffix(h, p.page.K, p.page.kseq, events)
          p.held = { K: head, kseq: h.seq, time: h.time, genesis: p.page.genesis, count: p.page.count + got.length }
          p.page = undefined
        }
      } catch (e) {
        p.error = failure(e)
      }
    }
  }
  for (const p of parcels) if (p.page && !p.error) p.error = `head_mismatch: still paging after ${MAX_PAGES} requests`

  // Second request on the same stream: every number again, with known set
  // to the head held. An unchanged parcel comes back ok with the same head
  // and no events (section 8.4, step 5).
  const second = await session.request(parcels.map((p) => (p.held && !p.error ? { number: p.typed, known: p.held.K } : { number: p.typed })))
  checkNumbers(second, parcels)
  for (const [i, r] of second.entries()) {
    const p = parcels[i]
    if (!p.held || p.error) {
      p.recheck = r.code
      continue
    }
    try {
      if (r.code !== 'ok') throw new VectorError('head_mismatch', `asked again with its head, the node answers ${r.code}`, 'recheck')
      const { h, head } = open(r, p)
      const events = r.events ?? []
      // Section 6.4, rule 4: never a head of a lower seq.
      if (big(h.seq) < big(p.held.kseq)) throw new VectorError('head_mismatch', `head went back from seq ${p.held.kseq} to ${h.seq}`, 'recheck')
      if (r.more === true) {
        // A history too long for one answer: check this page and stop.
        await verifyPage(h, startsAtGenesis(events) ? null : p.held.K, p.held.kseq, events)
        p.recheck = 'more'
      } else if (startsAtGenesis(events)) {
        // Resent in full (section 6.4, step 2).
        const got = await verifyChain(h, events)
        if (got.some((x) => x.cid.equals(p.held.K))) {
          p.held = { ...p.held, K: head, kseq: h.seq, time: h.time, count: got.length }
          p.recheck = 'resent'
        } else if (got[0].cid.equals(p.held.genesis)) {
          throw new VectorError('broken_chain', 'the node signed two histories for one parcel (a fork)', 'recheck')
        } else if (big(h.time) > big(p.held.time)) {
          // The number was recycled (section 4.3): adopt the new parcel.
          p.held = { K: head, kseq: h.seq, time: h.time, genesis: got[0].cid, count: got.length }
          p.recheck = 'new_parcel'
        } else {
          p.recheck = 'stale' // an older answer: keep what is held
        }
      } else {
        const got = await verifySuffix(h, p.held.K, p.held.kseq, events)
        p.recheck = got.length === 0 ? 'up_to_date' : 'advanced'
        p.held = { ...p.held, K: head, kseq: h.seq, time: h.time, count: p.held.count + got.length }
      }
    } catch (e) {
      p.error = `recheck: ${failure(e)}`
    }
  }
  return parcels
}

// startsAtGenesis says whether a list of events begins at seq 0. The events
// are fully checked by the chain verification that follows.
function startsAtGenesis (events) {
  if (events.length === 0) return false
  try {
    return big(decodeStrict(events[0]).seq ?? -1) === 0n
  } catch {
    return false
  }
}

// ---------------------------------------------------------------------------

function report (parcels) {
  return parcels.map((p) => {
    const o = { number: p.number, code: p.code }
    if (p.code !== 'ok') {
      Object.assign(o, { verified: null, seq: null, head: null, events: 0 })
    } else if (p.held && !p.error) {
      Object.assign(o, { verified: true, seq: Number(p.held.kseq), head: p.held.K.toString(), events: p.held.count })
    } else {
      Object.assign(o, { verified: false, seq: p.held ? Number(p.held.kseq) : null, head: p.held ? p.held.K.toString() : null, events: p.held ? p.held.count : 0 })
    }
    if (p.error) o.error = p.error
    if (p.message !== undefined) o.message = p.message
    if (p.recheck !== undefined) o.recheck = p.recheck
    return o
  })
}

async function main () {
  const opts = parseArgs(process.argv.slice(2))
  let ma
  try {
    ma = multiaddr(opts.addr)
  } catch (e) {
    usage(`bad multiaddr ${JSON.stringify(opts.addr)}: ${e.message}`)
  }
  const peer = ma.getComponents().find((c) => c.name === 'p2p')?.value
  if (!peer) usage(`multiaddr ${opts.addr} has no /p2p/ component: the peer must be authenticated (section 8.1)`)

  const node = await createLibp2p({
    addresses: { listen: [] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify() }
  })
  try {
    log(`dialling ${opts.addr}`)
    const info = await fetchInfo(node, ma, opts.timeout)
    log(`info: carrier ${info.carrier ?? '(none)'}, ${info.version}, protocols ${info.protocols.join(' ')}, ${(info.keys ?? []).length} key(s), registry_seq ${info.registry_seq}`)
    if (!/^opentrack\/./.test(info.version)) console.error(`track-client: warning: Info.version ${JSON.stringify(info.version)} is not opentrack/<version> (section 8.6)`)
    if (info.carrier === undefined) throw new ClientError('info: the node serves no carrier (a platform node); track it through a carrier node')
    if (!info.protocols.includes(TRACK_ID)) throw new ClientError(`info: the node does not list ${TRACK_ID}`)
    const maxNumbers = Math.min(V1_LIMITS.max_numbers, Number(info.limits.max_numbers))
    if (opts.numbers.length > maxNumbers) throw new ClientError(`${opts.numbers.length} numbers, but the node takes at most ${maxNumbers} per request`)
    const keys = opts.keys.length > 0 ? opts.keys : (info.keys ?? [])
    log(`verifying with ${opts.keys.length > 0 ? 'the --key' : 'the Info'} keys: ${keys.map(toHex).join(', ') || '(none)'}`)

    const stream = await node.dialProtocol(ma, TRACK_ID, { signal: AbortSignal.timeout(opts.timeout) })
    const session = new TrackSession(stream, info.limits, opts.timeout)
    const parcels = await track(session, opts.numbers, info.carrier, keys)
    await session.close()
    log(`${session.requests} track requests on one stream; the server ended it cleanly`)
    if (verbose) {
      try {
        const p = await node.peerStore.get(node.getConnections()[0]?.remotePeer)
        const agent = p.metadata.get('AgentVersion')
        if (agent) log(`identify: agent ${new TextDecoder().decode(agent)}`)
        log(`identify: protocols ${p.protocols.join(' ')}`)
      } catch {}
    }

    const out = report(parcels)
    console.log(JSON.stringify(out, null, 2))
    return out.every((o) => o.code !== 'ok' || o.verified === true) ? EXIT_OK : EXIT_UNVERIFIED
  } finally {
    await Promise.race([node.stop(), new Promise((resolve) => setTimeout(resolve, 2000))])
  }
}

try {
  process.exit(await main())
} catch (e) {
  // A ClientError says what went wrong on the wire; anything else comes from
  // the transport (dial, Noise, yamux, multistream-select), with its stack
  // under -v.
  const msg = e instanceof ClientError ? e.message : `transport: ${e?.name ?? 'Error'}: ${e?.message ?? e}`
  console.error(`track-client: ${msg}`)
  if (verbose && !(e instanceof ClientError) && e?.stack) console.error(e.stack)
  process.exit(EXIT_ERROR)
}
