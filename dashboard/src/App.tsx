import { Redirect, Route, Switch, useLocation } from "wouter";
import { Layout } from "./components/Layout";
import { Loading, Notice } from "./components/ui";
import { useSetup } from "./api/queries";
import { EventsPage } from "./pages/EventsPage";
import { LoginPage } from "./pages/LoginPage";
import { OverviewPage } from "./pages/OverviewPage";
import { ProjectPage } from "./pages/ProjectPage";
import { ProjectsPage } from "./pages/ProjectsPage";
import { ServersPage } from "./pages/ServersPage";
import { ServiceFormPage } from "./pages/ServiceFormPage";
import { ServicePage } from "./pages/ServicePage";
import { SettingsPage } from "./pages/SettingsPage";
import { SetupPage } from "./pages/SetupPage";
import { useMe } from "./session";

export function App() {
  const setup = useSetup();
  const [location] = useLocation();
  if (setup.isPending) return <Loading what="NanoScale" />;
  if (setup.data?.needed === true && location !== "/setup") return <Redirect to="/setup" />;
  return (
    <Switch>
      <Route path="/setup" component={SetupPage} />
      <Route path="/login" component={LoginPage} />
      <Route>
        <Authenticated />
      </Route>
    </Switch>
  );
}

function Authenticated() {
  const me = useMe();
  if (me.isPending) return <Loading what="your session" />;
  // A 401 is turned into a redirect to /login by the query cache.
  if (me.isError) return <Notice error={me.error} />;
  return (
    <Layout>
      <Switch>
        <Route path="/" component={OverviewPage} />
        <Route path="/servers" component={ServersPage} />
        <Route path="/projects" component={ProjectsPage} />
        <Route path="/projects/:id">{(p) => <ProjectPage id={p.id} />}</Route>
        <Route path="/projects/:id/services/new">{(p) => <ServiceFormPage projectId={p.id} />}</Route>
        <Route path="/services/:id">{(p) => <ServicePage id={p.id} />}</Route>
        <Route path="/services/:id/edit">{(p) => <ServiceFormPage serviceId={p.id} />}</Route>
        <Route path="/events" component={EventsPage} />
        <Route path="/settings" component={SettingsPage} />
        <Route>
          <section className="card">
            <h1>Not found</h1>
            <p>Nothing lives at this address.</p>
          </section>
        </Route>
      </Switch>
    </Layout>
  );
}
