// Base64 for audio payloads (POST /continue, the `audio` field of a task).
// btoa/atob work on "binary strings"; converting in chunks avoids the argument
// limit of String.fromCharCode(...bytes) on multi-megabyte clips.

const CHUNK = 0x8000;

export function bytesToBase64(bytes) {
  const view = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let binary = "";
  for (let i = 0; i < view.length; i += CHUNK) {
    binary += String.fromCharCode.apply(null, view.subarray(i, i + CHUNK));
  }
  return btoa(binary);
}

export function base64ToBytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** The MIME type of an audio file from its first bytes (the server sends WAV or MP3). */
export function sniffAudioType(bytes) {
  const head = String.fromCharCode(...bytes.subarray(0, 4));
  if (head === "RIFF") return "audio/wav";
  if (head.startsWith("ID3") || (bytes[0] === 0xff && (bytes[1] & 0xe0) === 0xe0)) return "audio/mpeg";
  if (head === "fLaC") return "audio/flac";
  if (head === "OggS") return "audio/ogg";
  return "application/octet-stream";
}
