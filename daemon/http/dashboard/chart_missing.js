/* Stand-in used when libjs-chart.js was not installed at build time: no charts. */
window.Chart = undefined;
