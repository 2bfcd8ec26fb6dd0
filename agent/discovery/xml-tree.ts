// A small, strict XML 1.0 reader for data documents such as `nvidia-smi -q -x`: one pass over the
// text, a tree of elements (name, attributes, child elements, character data), and a well-formedness
// check as it goes (one root, matched and well-named tags, quoted and unique attributes, known
// entity and character references, legal characters, nothing but markup after the root). It does
// not read DTDs (nvidia-smi's is external: `<!DOCTYPE nvidia_smi_log SYSTEM "...">`), so only the
// five predefined entities exist; an internal subset is skipped, not applied.
//
// One deliberate leniency: C0 control characters, which XML 1.0 forbids, are kept where they occur
// in character data and attribute values. nvidia-smi copies some strings from the board's VBIOS and
// InfoROM; a stray control byte in a product name should cost that value (discovery strips control
// characters from every attribute it publishes), not the whole node. In names and markup they are
// still errors.
//
// Why not a general parser: fast-xml-parser spent ~190 ms of the agent's start (validation pass,
// then parse with path matching) on a 212 KB capture of which discovery reads a dozen fields per
// GPU; this reader does both in one pass in a few milliseconds (docs/performance.md).

export interface XmlElement {
  name: string;
  /** Attribute values with references decoded; empty when the tag has none. */
  attrs: Record<string, string>;
  children: XmlElement[];
  /** The element's own character data (not its children's), references decoded, trimmed. */
  text: string;
}

/** Not well-formed: where (1-based line and column) and what. */
export class XmlSyntaxError extends Error {
  constructor(
    message: string,
    readonly line: number,
    readonly column: number,
  ) {
    super(message);
    this.name = "XmlSyntaxError";
  }
}

/** Deeper nesting than this is refused (nvidia-smi's documents are 5 levels deep). */
export const MAX_DEPTH = 256;

const NAME = /[A-Za-z_:\u00C0-\uFFFF][-A-Za-z0-9_:.\u00B7\u00C0-\uFFFF]*/y;
const SPACE = /[ \t\r\n]*/y;
const PREDEFINED: Record<string, string> = { lt: "<", gt: ">", amp: "&", quot: '"', apos: "'" };

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;
}

/** Parses a whole document; throws XmlSyntaxError where it is not well-formed. */
export function parseXml(doc: string): XmlElement {
  return new Reader(doc).document();
}

/** The first child element called `name`. */
export function child(el: XmlElement | undefined, name: string): XmlElement | undefined {
  if (!el) return undefined;
  for (const c of el.children) if (c.name === name) return c;
  return undefined;
}

/** Every child element called `name`, in document order. */
export function childrenNamed(el: XmlElement | undefined, name: string): XmlElement[] {
  return el ? el.children.filter((c) => c.name === name) : [];
}

class Reader {
  private pos = 0;
  private seenDoctype = false;

  constructor(private readonly s: string) {
    if (s.charCodeAt(0) === 0xfeff) this.pos = 1; // a byte-order mark
  }

  document(): XmlElement {
    const s = this.s;
    let root: XmlElement | undefined;
    for (;;) {
      this.spaces();
      if (this.pos >= s.length) break;
      if (s.charCodeAt(this.pos) !== 0x3c /* < */) throw this.fail(root ? "text after the root element" : "text before the root element");
      if (s.startsWith("<!--", this.pos)) this.comment();
      else if (s.startsWith("<?", this.pos)) this.pi();
      else if (s.startsWith("<!DOCTYPE", this.pos)) {
        if (root || this.seenDoctype) throw this.fail("a DOCTYPE declaration is only allowed once, before the root element");
        this.doctype();
      } else if (root) throw this.fail("a second root element");
      else root = this.element();
    }
    if (!root) throw this.fail("no root element");
    return root;
  }

  /** An element and everything in it, iteratively (hostile nesting cannot overflow the stack). */
  private element(): XmlElement {
    const s = this.s;
    const stack: { el: XmlElement; text: string }[] = [];
    for (;;) {
      const top = stack[stack.length - 1];
      if (top) {
        // Character data up to the next markup.
        const lt = s.indexOf("<", this.pos);
        if (lt < 0) {
          this.pos = s.length;
          throw this.fail(`unexpected end of document: <${top.el.name}> is not closed`);
        }
        if (lt > this.pos) {
          top.text += this.chars(this.pos, lt);
          this.pos = lt;
        }
        if (s.charCodeAt(lt + 1) === 0x2f /* / */) {
          this.pos = lt + 2;
          const name = this.name("end tag");
          if (name !== top.el.name) {
            this.pos = lt;
            throw this.fail(`</${name}> does not close <${top.el.name}>`);
          }
          this.spaces();
          this.expect(">", `in </${name}>`);
          top.el.text = top.text.trim();
          stack.pop();
          if (stack.length === 0) return top.el;
          continue;
        }
        if (s.startsWith("<!--", lt)) {
          this.comment();
          continue;
        }
        if (s.startsWith("<![CDATA[", lt)) {
          const end = s.indexOf("]]>", lt + 9);
          if (end < 0) throw this.fail("unterminated CDATA section");
          top.text += s.slice(lt + 9, end);
          this.pos = end + 3;
          continue;
        }
        if (s.startsWith("<?", lt)) {
          this.pi();
          continue;
        }
        if (s.charCodeAt(lt + 1) === 0x21 /* ! */) throw this.fail("markup declaration inside an element");
      }
      // A start tag at this.pos.
      this.pos++;
      const el: XmlElement = { name: this.name("start tag"), attrs: {}, children: [], text: "" };
      let empty = false;
      for (;;) {
        const before = this.pos;
        this.spaces();
        const c = s.charCodeAt(this.pos);
        if (c === 0x3e /* > */) {
          this.pos++;
          break;
        }
        if (c === 0x2f /* / */) {
          this.pos++;
          this.expect(">", `after "/" in <${el.name}>`);
          empty = true;
          break;
        }
        if (Number.isNaN(c)) throw this.fail(`unexpected end of document in <${el.name}>`);
        if (this.pos === before) throw this.fail(`expected whitespace before an attribute in <${el.name}>`);
        this.attribute(el);
      }
      if (top) top.el.children.push(el);
      if (empty) {
        if (!top) return el;
        continue;
      }
      if (stack.length >= MAX_DEPTH) throw this.fail(`elements nested deeper than ${MAX_DEPTH}`);
      stack.push({ el, text: "" });
    }
  }

  private attribute(el: XmlElement): void {
    const s = this.s;
    const name = this.name(`attribute of <${el.name}>`);
    this.spaces();
    this.expect("=", `after attribute ${name}`);
    this.spaces();
    const q = s.charCodeAt(this.pos);
    if (q !== 0x22 && q !== 0x27) throw this.fail(`attribute ${name} of <${el.name}> is not quoted`);
    const end = s.indexOf(q === 0x22 ? '"' : "'", this.pos + 1);
    if (end < 0) throw this.fail(`unterminated value of attribute ${name}`);
    const lt = s.indexOf("<", this.pos + 1);
    if (lt >= 0 && lt < end) {
      this.pos = lt;
      throw this.fail(`"<" in the value of attribute ${name}`);
    }
    if (Object.prototype.hasOwnProperty.call(el.attrs, name)) throw this.fail(`attribute ${name} repeated in <${el.name}>`);
    // Attribute-value normalisation: each whitespace character becomes a space.
    el.attrs[name] = this.chars(this.pos + 1, end).replace(/[\t\r\n]/g, " ");
    this.pos = end + 1;
  }

  /** Character data s[from, to), references decoded. */
  private chars(from: number, to: number): string {
    const raw = this.s.slice(from, to);
    if (raw.includes("]]>")) {
      this.pos = from + raw.indexOf("]]>");
      throw this.fail('"]]>" in character data');
    }
    if (!raw.includes("&")) return raw;
    return raw.replace(/&([^;&<\s]*);?/g, (m, ref: string, at: number) => {
      const bad = (): never => {
        this.pos = from + at;
        throw this.fail(`bad reference ${JSON.stringify(m.slice(0, 16))}`);
      };
      if (!m.endsWith(";")) return bad();
      if (ref.startsWith("#")) {
        const code = /^#x[0-9a-fA-F]{1,6}$/.test(ref) ? parseInt(ref.slice(2), 16) : /^#[0-9]{1,7}$/.test(ref) ? parseInt(ref.slice(1), 10) : NaN;
        const legal = code === 0x9 || code === 0xa || code === 0xd || (code >= 0x20 && code <= 0xd7ff) || (code >= 0xe000 && code <= 0xfffd) || (code >= 0x10000 && code <= 0x10ffff);
        return legal ? String.fromCodePoint(code) : bad();
      }
      const v = PREDEFINED[ref];
      return v ?? bad();
    });
  }

  private name(what: string): string {
    NAME.lastIndex = this.pos;
    const m = NAME.exec(this.s);
    if (!m) throw this.fail(`expected a name in ${what}`);
    this.pos = NAME.lastIndex;
    return m[0];
  }

  private spaces(): void {
    SPACE.lastIndex = this.pos;
    SPACE.exec(this.s);
    this.pos = SPACE.lastIndex;
  }

  private expect(tok: string, where: string): void {
    if (!this.s.startsWith(tok, this.pos)) throw this.fail(`expected "${tok}" ${where}`);
    this.pos += tok.length;
  }

  private comment(): void {
    const end = this.s.indexOf("-->", this.pos + 4);
    if (end < 0) throw this.fail("unterminated comment");
    const body = this.s.slice(this.pos + 4, end);
    if (body.includes("--") || body.endsWith("-")) throw this.fail('"--" inside a comment');
    this.pos = end + 3;
  }

  private pi(): void {
    this.pos += 2;
    const target = this.name("processing instruction");
    if (target.toLowerCase() === "xml" && this.pos !== 5 + (this.s.charCodeAt(0) === 0xfeff ? 1 : 0)) throw this.fail("an XML declaration is only allowed at the start");
    const end = this.s.indexOf("?>", this.pos);
    if (end < 0) throw this.fail("unterminated processing instruction");
    if (end > this.pos && !isSpace(this.s.charCodeAt(this.pos))) throw this.fail(`expected whitespace after <?${target}`);
    this.pos = end + 2;
  }

  /** `<!DOCTYPE name (SYSTEM|PUBLIC ...)? [internal subset]? >`: checked for shape, not applied. */
  private doctype(): void {
    const s = this.s;
    this.pos += "<!DOCTYPE".length;
    const before = this.pos;
    this.spaces();
    if (this.pos === before) throw this.fail("expected whitespace after <!DOCTYPE");
    this.name("DOCTYPE");
    let subset = 0;
    for (; this.pos < s.length; this.pos++) {
      const c = s.charCodeAt(this.pos);
      if (c === 0x22 || c === 0x27) {
        const end = s.indexOf(c === 0x22 ? '"' : "'", this.pos + 1);
        if (end < 0) break;
        this.pos = end;
      } else if (c === 0x5b /* [ */) subset++;
      else if (c === 0x5d /* ] */) subset--;
      else if (c === 0x3e /* > */ && subset === 0) {
        this.pos++;
        this.seenDoctype = true;
        return;
      }
    }
    throw this.fail("unterminated DOCTYPE declaration");
  }

  private fail(msg: string): XmlSyntaxError {
    const at = Math.min(this.pos, this.s.length);
    let line = 1;
    let lineStart = 0;
    for (let i = this.s.indexOf("\n"); i >= 0 && i < at; i = this.s.indexOf("\n", i + 1)) {
      line++;
      lineStart = i + 1;
    }
    return new XmlSyntaxError(msg, line, at - lineStart + 1);
  }
}
