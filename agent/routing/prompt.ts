// What the router hashes for a request: completions hash their prompt, chat requests hash a
// canonical form (role and content of each message, in order) so JSON key order and whitespace
// do not break prefix matches. Pure functions; the caller has already parsed the JSON.

const MSG_SEP = "\u001e"; // record separator between messages
const ROLE_SEP = "\u001f"; // unit separator between role and content

function contentText(content: unknown): string {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    let s = "";
    for (const part of content) {
      if (part && typeof part === "object") {
        const p = part as Record<string, unknown>;
        s += typeof p.text === "string" ? p.text : `[${String(p.type ?? "part")}]`;
      } else if (typeof part === "string") s += part;
    }
    return s;
  }
  return content === undefined || content === null ? "" : JSON.stringify(content);
}

/** Canonical text of a chat `messages` array, or undefined when it is not one. */
export function canonicalChat(messages: unknown): string | undefined {
  if (!Array.isArray(messages)) return undefined;
  let s = "";
  for (const m of messages) {
    if (!m || typeof m !== "object") return undefined;
    const msg = m as Record<string, unknown>;
    s += String(msg.role ?? "") + ROLE_SEP + contentText(msg.content) + MSG_SEP;
  }
  return s;
}

/** Text of a completions `prompt` (string, strings, or token ids), or undefined when absent. */
export function completionPrompt(prompt: unknown): string | undefined {
  if (typeof prompt === "string") return prompt;
  if (Array.isArray(prompt)) {
    if (prompt.every((p) => typeof p === "string")) return prompt.join(MSG_SEP);
    if (prompt.every((p) => typeof p === "number")) return prompt.join(",");
    return JSON.stringify(prompt);
  }
  return undefined;
}

export interface RoutedRequest {
  model: string;
  prompt: string;
  salt: string | undefined;
}

/** Extracts model, routed text and cache salt from a parsed body; undefined when malformed. */
export function routedRequest(path: "completions" | "chat", body: unknown): RoutedRequest | undefined {
  if (!body || typeof body !== "object" || Array.isArray(body)) return undefined;
  const b = body as Record<string, unknown>;
  const model = typeof b.model === "string" ? b.model : "";
  const prompt = path === "chat" ? canonicalChat(b.messages) : completionPrompt(b.prompt);
  if (prompt === undefined) return undefined;
  const salt = typeof b.cache_salt === "string" ? b.cache_salt : undefined;
  return { model, prompt, salt };
}
