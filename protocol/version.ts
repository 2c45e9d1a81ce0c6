/** The pklock version, as printed by `pklock --version` and sent in `hello`. */
export const VERSION = "0.1.0";

/** The protocol version this implementation speaks. */
export const PROTOCOL_VERSION = 1;
