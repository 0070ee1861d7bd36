// Toasts: short-lived notes for successes, and errors that stay until dismissed, each with the API's own words.

const MAX_TOASTS = 4;

export function toast({ kind = "info", title, detail = "", code = "", timeout } = {}) {
  const host = document.getElementById("toasts");
  if (!host) return null;
  const node = document.createElement("div");
  node.className = `toast ${kind}`;
  node.setAttribute("role", kind === "error" ? "alert" : "status");
  if (code) node.dataset.code = code;
  const body = document.createElement("div");
  body.className = "toast-body";
  const strong = document.createElement("strong");
  strong.textContent = title;
  body.append(strong);
  if (detail || code) {
    const p = document.createElement("p");
    p.textContent = detail ? `${detail} ` : "";
    if (code) {
      const c = document.createElement("code");
      c.textContent = code;
      p.append(c);
    }
    body.append(p);
  }
  const close = document.createElement("button");
  close.type = "button";
  close.className = "ghost";
  close.setAttribute("aria-label", "Dismiss");
  close.textContent = "✕";
  close.addEventListener("click", () => node.remove());
  node.append(body, close);
  host.append(node);
  while (host.children.length > MAX_TOASTS) host.firstElementChild.remove();
  const ms = timeout ?? (kind === "error" ? 0 : 4000);
  if (ms) setTimeout(() => node.remove(), ms);
  return node;
}

export function showError(error, fallbackTitle = "Something went wrong") {
  if (error?.name === "AbortError") return null;
  console.warn(error); // a warning, not an error: the page handled it and told the user
  return toast({
    kind: "error",
    title: error?.message || fallbackTitle,
    detail: error?.detail || "",
    code: error?.code && error.code !== "network_error" ? error.code : "",
  });
}
