package seal

// PrefixLen is where a record's ciphertext part begins.
const PrefixLen = prefixLen
