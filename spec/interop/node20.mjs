// js-libp2p (2.x and 3.x alike, through @libp2p/utils, yamux, it-queue and
// mortice) calls Promise.withResolvers, which Node.js has only from version
// 22, although none of the packages pinned here declares that. On Node 20
// this module adds it, as specified in ES2024. Import it before libp2p.

if (typeof Promise.withResolvers !== 'function') {
  Object.defineProperty(Promise, 'withResolvers', {
    configurable: true,
    writable: true,
    value: function withResolvers () {
      let resolve, reject
      const promise = new this((res, rej) => { resolve = res; reject = rej })
      return { promise, resolve, reject }
    }
  })
}
