// The cluster graph: contacts and the values they hold as nodes (a shared value is one node,
// not a clique of edges), joins and imported links as edges. Drawn with the vendored
// cytoscape; large clusters get a layout that costs one pass and cheap redraws while moving.

const LARGE = 300; // nodes above which the graph trades looks for speed

const style = [
  { selector: 'node', style: {
    'label': 'data(label)', 'font-size': 12, 'color': '#1f2933',
    'text-valign': 'bottom', 'text-margin-y': 3, 'min-zoomed-font-size': 7,
    'background-color': '#9aa5b1', 'width': 22, 'height': 22 } },
  { selector: 'node.contact', style: { 'background-color': '#3e7cb1', 'shape': 'ellipse' } },
  { selector: 'node.primary', style: {
    'background-color': '#d9822b', 'width': 30, 'height': 30, 'border-width': 3,
    'border-color': '#8a4a0f', 'font-weight': 'bold' } },
  { selector: 'node.value', style: { 'shape': 'round-rectangle', 'width': 16, 'height': 16 } },
  { selector: 'node.email', style: { 'background-color': '#5fa35f' } },
  { selector: 'node.phoneNumber', style: { 'background-color': '#8e6bbf' } },
  { selector: 'node.blocked', style: {
    'background-color': '#fff', 'border-width': 2, 'border-style': 'dashed',
    'border-color': '#c23030', 'color': '#c23030' } },
  { selector: 'edge', style: { 'width': 1.5, 'line-color': '#b8c2cc', 'curve-style': 'straight' } },
  { selector: 'edge.blocked', style: { 'line-style': 'dashed', 'line-color': '#e8a0a0' } },
  { selector: 'edge.join', style: { 'width': 2.5, 'line-color': '#d9822b', 'line-style': 'dotted' } },
  { selector: 'edge.link', style: { 'width': 2.5, 'line-color': '#3e7cb1', 'line-style': 'dashed' } },
  { selector: 'edge.path', style: { 'line-color': '#e12d39', 'width': 4, 'z-index': 10 } },
  { selector: 'node.path', style: { 'border-color': '#e12d39', 'border-width': 4, 'border-style': 'solid' } },
  { selector: 'node:selected', style: { 'overlay-color': '#3e7cb1', 'overlay-opacity': 0.25, 'overlay-padding': 6 } },
];

// Turns the API's graph into cytoscape elements. A large graph labels only its contacts (a
// value's text is shown when it is selected): laying out labels is half the cost of a draw.
function elements(graph) {
  const large = graph.nodes.length > LARGE;
  const blocked = new Set();
  const nodes = graph.nodes.map(n => {
    if (n.type === 'contact') {
      return { group: 'nodes', data: { id: n.id, label: (n.primary ? '★ #' : '#') + n.row.id, contact: n.row.id },
        classes: n.primary ? 'contact primary' : 'contact' };
    }
    if (n.blocked) blocked.add(n.id);
    return { group: 'nodes', data: { id: n.id, label: large ? '' : n.value, kind: n.kind, value: n.value, blocked: n.blocked },
      classes: `value ${n.kind}${n.blocked ? ' blocked' : ''}` };
  });
  const edges = graph.edges.map((e, i) => ({
    group: 'edges',
    data: { id: `e${i}`, source: e.source, target: e.target, type: e.type },
    classes: e.type + (blocked.has(e.target) || blocked.has(e.source) ? ' blocked' : ''),
  }));
  return nodes.concat(edges);
}

function layoutFor(count, blockedCount) {
  if (count > LARGE) {
    return { name: 'concentric', animate: false, minNodeSpacing: 6,
      concentric: n => (n.hasClass('primary') ? 3 : n.hasClass('contact') ? 2 : 1), levelWidth: () => 1 };
  }
  // A blocked value's edges are long and slack, so it floats apart from the contacts it would
  // otherwise seem to tie together.
  return { name: 'cose', animate: false, randomize: false, nodeRepulsion: () => 60000,
    gravity: 0.6, idealEdgeLength: e => (e.hasClass('blocked') ? 170 : 40),
    edgeElasticity: e => (e.hasClass('blocked') ? 8 : 100),
    numIter: 1000, padding: 20, componentSpacing: blockedCount ? 80 : 40 };
}

// Draws `graph` in `container`; `onSelect(node data)` on a click on a node.
export function draw(container, graph, onSelect) {
  const els = elements(graph);
  const count = graph.nodes.length;
  const blockedCount = graph.nodes.filter(n => n.blocked).length;
  const cy = cytoscape({
    container, elements: els, style,
    layout: layoutFor(count, blockedCount),
    boxSelectionEnabled: false,
    textureOnViewport: count > LARGE, hideEdgesOnViewport: count > LARGE, maxZoom: 1.6,
    selectionType: 'single',
  });
  cy.on('tap', 'node', evt => onSelect(evt.target.data()));
  return {
    cy,
    clearPath() { cy.elements().removeClass('path'); },
    // Marks the chain of hops [{from, to, evidence, email, phoneNumber}] on the graph.
    showPath(hops) {
      cy.elements().removeClass('path');
      const mark = (a, b) => {
        const na = cy.getElementById(a), nb = cy.getElementById(b);
        na.addClass('path'); nb.addClass('path');
        na.edgesWith(nb).addClass('path');
      };
      for (const hop of hops) {
        const from = `contact:${hop.from}`, to = `contact:${hop.to}`;
        if (hop.evidence === 'email' || hop.evidence === 'phoneNumber') {
          const value = `${hop.evidence}:${hop.evidence === 'email' ? hop.email : hop.phoneNumber}`;
          mark(from, value); mark(value, to);
        } else if (hop.evidence === 'join') {
          const e = `email:${hop.email}`, p = `phoneNumber:${hop.phoneNumber}`;
          const fromHoldsEmail = cy.getElementById(from).edgesWith(cy.getElementById(e)).length > 0;
          mark(from, fromHoldsEmail ? e : p); mark(e, p); mark(fromHoldsEmail ? p : e, to);
        } else {
          mark(from, to);
        }
      }
    },
    destroy() { cy.destroy(); },
  };
}
