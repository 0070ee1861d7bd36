// A Server-Sent Events parser for fetch() bodies.
//
// EventSource cannot send an Authorization header and does not exist in
// extension service workers, so /tasks/<id>/events is read with fetch() and
// parsed here, following the WHATWG event-stream rules that matter to us:
// lines end in \n, \r\n or \r; "field: value" with one optional space; data
// lines join with \n; a blank line dispatches; lines starting ":" are comments.

export function createSseParser(onEvent) {
  let buffer = "";
  let event = { type: "", data: [], id: null };

  function line(text) {
    if (text === "") {
      if (event.data.length > 0) {
        onEvent({ type: event.type || "message", data: event.data.join("\n"), id: event.id });
      }
      event = { type: "", data: [], id: event.id };
      return;
    }
    if (text.startsWith(":")) return;
    const colon = text.indexOf(":");
    const field = colon === -1 ? text : text.slice(0, colon);
    let value = colon === -1 ? "" : text.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event.type = value;
    else if (field === "data") event.data.push(value);
    else if (field === "id") event.id = value;
  }

  return {
    /** Feed decoded text; complete lines are processed, a partial tail is kept. */
    push(text) {
      buffer += text;
      let match;
      // A lone \r at the very end may be the first half of \r\n: wait for more.
      while ((match = /\r\n|\n|\r(?!$)/.exec(buffer)) !== null) {
        line(buffer.slice(0, match.index));
        buffer = buffer.slice(match.index + match[0].length);
      }
    },
    /** End of stream: an event without its blank line is dropped, as the spec says. */
    end() {
      if (buffer.endsWith("\r")) line(buffer.slice(0, -1));
      buffer = "";
    },
  };
}

/** Read a fetch Response body as SSE, calling onEvent for each event. Resolves at end of stream. */
export async function readSse(response, onEvent, signal) {
  const parser = createSseParser(onEvent);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  try {
    for (;;) {
      if (signal?.aborted) throw signal.reason ?? new Error("aborted");
      const { done, value } = await reader.read();
      if (done) break;
      parser.push(decoder.decode(value, { stream: true }));
    }
    parser.push(decoder.decode());
    parser.end();
  } finally {
    reader.releaseLock?.();
  }
}
