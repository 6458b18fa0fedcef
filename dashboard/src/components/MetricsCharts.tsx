// The service's requests, latency and memory over the last hour (uPlot, loaded
// with the service page only). Each chart also says its newest value in text.
import { useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import type { Schemas } from "../api/client";
import { useServiceMetrics } from "../api/queries";
import { withGaps } from "../chartData";
import { QueryState, bytes } from "./ui";

type Point = Schemas["MetricsPoint"];

interface Metric {
  title: string;
  value: (p: Point) => number | null;
  format: (v: number) => string;
  color: string;
}

const METRICS: Metric[] = [
  { title: "Requests", value: (p) => p.requests_per_second, format: (v) => `${v.toFixed(1)}/s`, color: "#2b59c3" },
  { title: "Mean latency", value: (p) => p.mean_latency_ms ?? null, format: (v) => `${v.toFixed(1)} ms`, color: "#b45309" },
  { title: "Memory", value: (p) => (p.memory_bytes ?? null), format: (v) => bytes(v), color: "#157f3b" },
];

export default function MetricsCharts(props: { serviceId: string }) {
  const metrics = useServiceMetrics(props.serviceId);
  if (!metrics.data) return <QueryState error={metrics.error} what="metrics" />;
  const points = metrics.data.points;
  if (points.length === 0) {
    return <p className="muted">No traffic or memory reported yet: agents report every 10 s while instances run.</p>;
  }
  return (
    <div className="grid-3 charts">
      {METRICS.map((metric) => (
        <Chart key={metric.title} metric={metric} points={points} />
      ))}
    </div>
  );
}

function Chart(props: { metric: Metric; points: Point[] }) {
  const host = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const { metric, points } = props;
  const [xs, ys] = withGaps(points, metric);
  const latest = [...ys].reverse().find((v) => v !== null);

  // uPlot draws into a DOM node it owns: create it once, then only feed data.
  useEffect(() => {
    if (!host.current) return;
    const chart = new uPlot(
      {
        width: host.current.clientWidth || 300,
        height: 140,
        legend: { show: false },
        cursor: { show: true },
        scales: { x: { time: true } },
        axes: [{ stroke: "#8a94a3", size: 30 }, { stroke: "#8a94a3", size: 56, values: (_u, values) => values.map((v) => metric.format(v)) }],
        series: [{}, { stroke: metric.color, width: 2, fill: `${metric.color}22`, spanGaps: false }],
      },
      [[], []],
      host.current,
    );
    plot.current = chart;
    const resize = () => {
      if (host.current) chart.setSize({ width: host.current.clientWidth || 300, height: 140 });
    };
    window.addEventListener("resize", resize);
    return () => {
      window.removeEventListener("resize", resize);
      chart.destroy();
      plot.current = null;
    };
  }, [metric]);

  useEffect(() => {
    plot.current?.setData([xs, ys] as uPlot.AlignedData);
  });

  return (
    <figure className="chart" data-testid={`chart-${metric.title}`}>
      <figcaption>
        {metric.title}: <strong>{latest === undefined ? "–" : metric.format(latest)}</strong>
      </figcaption>
      <div ref={host} role="img" aria-label={`${metric.title} over the last hour`} />
    </figure>
  );
}
