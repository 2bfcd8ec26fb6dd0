// Prometheus metrics written as text exposition format 0.0.4, without prom-client (which cost the
// agent ~11.5 MiB RSS and ~110 ms of import, and the proxy ~2 % per request in label hashing).
// A Registry holds metric families in registration order; each family holds its series in the
// order they were first touched. The output matches prom-client 15's byte for byte (a
// differential test in test/agent-ops.test.ts holds that), including its quirks: a blank line
// between families, `le` written first in bucket lines, an unlabelled metric showing a zero series
// before its first use. One deliberate difference: NaN is written `NaN` (prom-client: `Nan`).
//
// Hot path: a series is found by its label values through one Map per label (no key string is
// built, no object allocated); callers with fixed label values keep the handle `labels()` returns.

export const PROM_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** One string per declared label name, in declaration order. */
export type LabelValues<L extends readonly string[]> = { [K in keyof L]: string };

export interface MetricOptions<L extends readonly string[]> {
  name: string;
  help: string;
  labelNames?: L;
}

export interface FamilyInfo {
  name: string;
  help: string;
  type: "counter" | "gauge" | "histogram";
  labelNames: readonly string[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const LABEL_ESCAPES = /[\\\n"]/;
const HELP_ESCAPES = /[\\\n]/;

/** A sample value as Prometheus parses it: integers plain, floats shortest round-trip, ±Inf, NaN. */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

/** A label value inside double quotes: backslash, newline and quote escaped. */
export function escapeLabelValue(s: string): string {
  if (!LABEL_ESCAPES.test(s)) return s;
  return s.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

/** HELP text: backslash and newline escaped (quotes stay as they are). */
export function escapeHelp(s: string): string {
  if (!HELP_ESCAPES.test(s)) return s;
  return s.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

interface Series {
  /** `a="x",b="y"`, escaped once when the series is made; "" without labels. */
  readonly labels: string;
}

/** The part a family kind supplies: how a fresh series looks and how its lines read. */
abstract class Family<S extends Series, L extends readonly string[]> {
  readonly name: string;
  readonly help: string;
  readonly labelNames: L;
  abstract readonly type: FamilyInfo["type"];
  protected series: S[] = [];
  // nested: one level per label name; the last level holds the series
  private index = new Map<string, unknown>();

  constructor(opts: MetricOptions<L>, reserved: readonly string[] = []) {
    if (!METRIC_NAME.test(opts.name)) throw new TypeError(`invalid metric name ${JSON.stringify(opts.name)}`);
    if (!opts.help) throw new TypeError(`metric ${opts.name}: help text is required`);
    const names = (opts.labelNames ?? []) as unknown as L;
    for (const l of names) {
      if (!LABEL_NAME.test(l) || l.startsWith("__") || reserved.includes(l)) throw new TypeError(`metric ${opts.name}: invalid label name ${JSON.stringify(l)}`);
    }
    if (new Set(names).size !== names.length) throw new TypeError(`metric ${opts.name}: a label name is declared twice`);
    this.name = opts.name;
    this.help = opts.help;
    this.labelNames = names;
    // each kind calls clearSeries() once its own fields are set
  }

  protected abstract fresh(labels: string): S;
  /** Appends this family's sample lines. */
  abstract lines(out: string[]): void;

  protected clearSeries(): void {
    this.series = [];
    this.index = new Map();
    // prom-client shows an unlabelled counter or gauge at 0 before its first use; so do we
    if (this.labelNames.length === 0) this.series.push(this.fresh(""));
  }

  /** The series of an unlabelled metric. */
  protected root(): S {
    if (this.labelNames.length !== 0) throw new TypeError(`metric ${this.name} has labels ${this.labelNames.join(", ")}: use labels(...)`);
    return this.series[0] as S;
  }

  protected lookup(values: readonly string[]): S {
    const n = this.labelNames.length;
    if (values.length !== n) throw new TypeError(`metric ${this.name}: ${values.length} label values for ${n} labels (${this.labelNames.join(", ")})`);
    if (n === 0) return this.series[0] as S;
    let level = this.index;
    for (let i = 0; i < n - 1; i++) {
      const v = values[i] as string;
      let next = level.get(v) as Map<string, unknown> | undefined;
      if (!next) level.set(v, (next = new Map()));
      level = next;
    }
    const last = values[n - 1] as string;
    let s = level.get(last) as S | undefined;
    if (!s) {
      let labels = "";
      for (let i = 0; i < n; i++) labels += `${i ? "," : ""}${this.labelNames[i]}="${escapeLabelValue(values[i] as string)}"`;
      s = this.fresh(labels);
      level.set(last, s);
      this.series.push(s);
    }
    return s;
  }

  info(): FamilyInfo {
    return { name: this.name, help: this.help, type: this.type, labelNames: this.labelNames };
  }

  /** Called at scrape time before `lines`. */
  collect(): void {}
}

export interface CounterChild {
  inc(by?: number): void;
}

export interface GaugeChild {
  set(v: number): void;
  inc(by?: number): void;
  dec(by?: number): void;
}

export interface HistogramChild {
  observe(v: number): void;
}

// A series is its own child handle: `labels()` hands back the stored object, allocating nothing.
class ValueSeries implements Series, CounterChild, GaugeChild {
  value = 0;
  constructor(readonly labels: string, private readonly metric: string, private readonly counter: boolean) {}

  inc(by = 1): void {
    if (this.counter && (!(by >= 0) || by === Infinity)) throw new TypeError(`counter ${this.metric}: cannot add ${by} (counters only go up, by finite amounts)`);
    this.value += by;
  }

  set(v: number): void {
    this.value = v;
  }

  dec(by = 1): void {
    this.value -= by;
  }
}

export class Counter<L extends readonly string[] = []> extends Family<ValueSeries, L> {
  readonly type = "counter";

  constructor(opts: MetricOptions<L>) {
    super(opts);
    this.clearSeries();
  }

  protected fresh(labels: string): ValueSeries {
    return new ValueSeries(labels, this.name, true);
  }

  /** Unlabelled counters only. */
  inc(by = 1): void {
    this.root().inc(by);
  }

  /** The series for these label values, made on first use. */
  labels(...values: LabelValues<L>): CounterChild {
    return this.lookup(values);
  }

  lines(out: string[]): void {
    writeValues(this.name, this.series, out);
  }
}

export interface GaugeOptions<L extends readonly string[]> extends MetricOptions<L> {
  /** Read at scrape time, before the gauge's lines are written. */
  collect?: (g: Gauge<L>) => void;
}

export class Gauge<L extends readonly string[] = []> extends Family<ValueSeries, L> {
  readonly type = "gauge";
  private readonly onCollect: ((g: Gauge<L>) => void) | undefined;

  constructor(opts: GaugeOptions<L>) {
    super(opts);
    this.onCollect = opts.collect;
    this.clearSeries();
  }

  protected fresh(labels: string): ValueSeries {
    return new ValueSeries(labels, this.name, false);
  }

  set(v: number): void {
    this.root().set(v);
  }

  inc(by = 1): void {
    this.root().inc(by);
  }

  dec(by = 1): void {
    this.root().dec(by);
  }

  labels(...values: LabelValues<L>): GaugeChild {
    return this.lookup(values);
  }

  /** Drops every series (handles from `labels()` no longer show); an unlabelled gauge goes to 0. */
  reset(): void {
    this.clearSeries();
  }

  override collect(): void {
    this.onCollect?.(this);
  }

  lines(out: string[]): void {
    writeValues(this.name, this.series, out);
  }
}

function writeValues(name: string, series: readonly ValueSeries[], out: string[]): void {
  for (const s of series) out.push(`${name}${s.labels ? `{${s.labels}}` : ""} ${formatValue(s.value)}`);
}

class HistogramSeries implements Series, HistogramChild {
  /** Per bucket, not cumulative: summed at scrape time. */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  constructor(readonly labels: string, private readonly metric: string, private readonly bounds: Float64Array) {
    this.counts = new Float64Array(bounds.length);
  }

  observe(v: number): void {
    if (!Number.isFinite(v)) throw new TypeError(`histogram ${this.metric}: cannot observe ${v}`);
    this.sum += v;
    this.count++;
    const b = this.bounds;
    for (let i = 0; i < b.length; i++) {
      if (v <= (b[i] as number)) {
        (this.counts[i] as number)++;
        return;
      }
    }
  }
}

export interface HistogramOptions<L extends readonly string[]> extends MetricOptions<L> {
  /** Upper bounds, strictly increasing and finite; +Inf is added. */
  buckets: readonly number[];
}

export class Histogram<L extends readonly string[] = []> extends Family<HistogramSeries, L> {
  readonly type = "histogram";
  private readonly bounds: Float64Array;
  private readonly les: readonly string[];

  constructor(opts: HistogramOptions<L>) {
    super(opts, ["le"]);
    const b = opts.buckets;
    for (let i = 0; i < b.length; i++) {
      if (!Number.isFinite(b[i]) || (i > 0 && (b[i] as number) <= (b[i - 1] as number))) throw new TypeError(`histogram ${opts.name}: buckets must be finite and strictly increasing`);
    }
    this.bounds = Float64Array.from(b);
    this.les = b.map((x) => `le="${formatValue(x)}"`);
    this.clearSeries();
  }

  protected fresh(labels: string): HistogramSeries {
    return new HistogramSeries(labels, this.name, this.bounds);
  }

  observe(v: number): void {
    this.root().observe(v);
  }

  labels(...values: LabelValues<L>): HistogramChild {
    return this.lookup(values);
  }

  lines(out: string[]): void {
    const name = this.name;
    for (const s of this.series) {
      const rest = s.labels ? `,${s.labels}}` : "}";
      let acc = 0;
      for (let i = 0; i < this.les.length; i++) {
        acc += s.counts[i] as number;
        out.push(`${name}_bucket{${this.les[i]}${rest} ${formatValue(acc)}`);
      }
      out.push(`${name}_bucket{le="+Inf"${rest} ${formatValue(s.count)}`);
      const braces = s.labels ? `{${s.labels}}` : "";
      out.push(`${name}_sum${braces} ${formatValue(s.sum)}`);
      out.push(`${name}_count${braces} ${formatValue(s.count)}`);
    }
  }
}

type AnyFamily = Family<Series, readonly string[]>;

/** Metric families of one agent or router, in registration order (never a module-wide one). */
export class Registry {
  readonly contentType = PROM_CONTENT_TYPE;
  private readonly families: AnyFamily[] = [];

  private add<F extends AnyFamily>(f: F): F {
    if (this.families.some((g) => g.name === f.name)) throw new TypeError(`a metric named ${f.name} is already registered`);
    this.families.push(f);
    return f;
  }

  counter<const L extends readonly string[] = []>(opts: MetricOptions<L>): Counter<L> {
    return this.add(new Counter<L>(opts));
  }

  gauge<const L extends readonly string[] = []>(opts: GaugeOptions<L>): Gauge<L> {
    return this.add(new Gauge<L>(opts));
  }

  histogram<const L extends readonly string[] = []>(opts: HistogramOptions<L>): Histogram<L> {
    return this.add(new Histogram<L>(opts));
  }

  /** Name, help, type and declared labels of every family (docs/operations.md is checked against it). */
  list(): FamilyInfo[] {
    return this.families.map((f) => f.info());
  }

  /** The exposition text: collect callbacks run first, family by family. */
  text(): string {
    const blocks: string[] = [];
    for (const f of this.families) {
      f.collect();
      const out = [`# HELP ${f.name} ${escapeHelp(f.help)}`, `# TYPE ${f.name} ${f.type}`];
      f.lines(out);
      blocks.push(out.join("\n"));
    }
    return `${blocks.join("\n\n")}\n`;
  }
}
