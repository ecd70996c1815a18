# The status page as an admin sees it: rendered by headless Chromium at
# 1,280 x 800, driven through the DevTools protocol over a pipe
# (--remote-debugging-pipe: no port, no WebSocket). It must not scroll
# sideways, relative times must stay on one line with the UTC time on
# hover, zero counts must be neutral, the page must load nothing. The
# screenshots are kept under t/logs/ for review. Without chromium the test
# says so and skips.
use strict;
use warnings FATAL => 'all';
use Apache::Test;
use Apache::TestRequest qw(GET_BODY);
use File::Path ();
use IO::Handle ();
use IO::Select ();
use JSON::PP ();
use MIME::Base64 ();
use POSIX ();
use lib 't/lib';
use RSTest;
use Time::HiRes qw(time sleep);

plan tests => 12;

my $chromium = (grep { -x } qw(/usr/bin/chromium /usr/bin/chromium-browser))[0];
my $t_logs = Apache::Test::vars()->{t_logs};
my $url = 'http://' . Apache::TestRequest::hostport() . '/rs-status';
my ($pid, $to, $from, $buf, $next_id, @events) = (undef, undef, undef, '', 0);

END {
    local $?;
    if ($pid) {
        kill 'TERM', -$pid; # its renderer and helper processes too
        my $end = time + 10;
        sleep 0.1 while waitpid($pid, POSIX::WNOHANG()) == 0 && time < $end;
        kill 'KILL', -$pid if kill 0, $pid;
        waitpid $pid, 0;
    }
}

# Messages are JSON terminated by NUL. Events that arrive while waiting for
# an answer are queued for wait_event.
sub read_msg {
    my $deadline = shift;
    my $sel = IO::Select->new($from);
    while (1) {
        if ((my $i = index $buf, "\0") >= 0) {
            my $m = substr $buf, 0, $i;
            substr($buf, 0, $i + 1) = '';
            return JSON::PP::decode_json($m);
        }
        my $left = $deadline - time;
        die "chromium: no answer in time\n" if $left <= 0 || !$sel->can_read($left);
        sysread($from, $buf, 1 << 20, length $buf) or die "chromium: pipe closed\n";
    }
}

sub cdp {
    my ($session, $method, %params) = @_;
    my $id = ++$next_id;
    my %m = (id => $id, method => $method, params => \%params);
    $m{sessionId} = $session if $session;
    print $to JSON::PP::encode_json(\%m), "\0";
    my $deadline = time + 60;
    while (1) {
        my $m = read_msg($deadline);
        if (($m->{id} // 0) == $id) {
            die "chromium: $method: $m->{error}{message}\n" if $m->{error};
            return $m->{result};
        }
        push @events, $m if $m->{method};
    }
}

sub wait_event {
    my ($name, $timeout) = @_;
    my $deadline = time + $timeout;
    while (1) {
        for my $i (0 .. $#events) {
            return splice @events, $i, 1 if $events[$i]{method} eq $name;
        }
        my $m = read_msg($deadline);
        push @events, $m if $m->{method};
    }
}

sub evaluate {
    my ($session, $js) = @_;
    my $r = cdp($session, 'Runtime.evaluate', expression => $js, returnByValue => JSON::PP::true);
    die "chromium: $js: $r->{exceptionDetails}{text}\n" if $r->{exceptionDetails};
    return $r->{result}{value};
}

sub screenshot {
    my ($session, $file, %clip) = @_;
    my %p = (format => 'png');
    %p = (%p, captureBeyondViewport => JSON::PP::true, clip => { %clip, x => 0, y => 0, scale => 1 })
        if %clip;
    my $png = MIME::Base64::decode_base64(cdp($session, 'Page.captureScreenshot', %p)->{data});
    open my $fh, '>:raw', $file or die "$file: $!";
    print $fh $png;
    close $fh;
    return length $png;
}

sub viewport {
    my ($session, $w, $h) = @_;
    cdp($session, 'Emulation.setDeviceMetricsOverride', width => $w, height => $h,
        deviceScaleFactor => 1, mobile => JSON::PP::false);
}

SKIP: {
    skip('chromium not installed (apt-get install chromium)', 12) unless $chromium;

    # Something to show: the failing certificate has its error, the good one
    # its response.
    RSTest::wait_for(sub {
        my $j = JSON::PP::decode_json(GET_BODY('/rs-status?json'));
        my %c = map { ($_->{subject} =~ /CN=([^,]+)/)[0] => $_ } @{ $j->{certificates} };
        ($c{'status-none.rs.test'}{last_error} // '') =~ /unauthorized/ && $c{'good.rs.test'}{state} eq 'good';
    }, 20, 0.5);

    my $profile = "$t_logs/chromium-profile";
    File::Path::remove_tree($profile);
    File::Path::make_path($profile);
    pipe my $cmd_r, $to or die $!;
    pipe $from, my $res_w or die $!;
    $to->autoflush(1);
    $pid = fork // die "fork: $!";
    if (!$pid) {
        POSIX::setsid(); # a group of its own: END ends its helpers with it
        # the pipes may already be 3 or 4 (and close-on-exec): out of the
        # way first, then dup2, whose copies survive exec
        my ($r, $w) = (POSIX::dup2(fileno $cmd_r, 10), POSIX::dup2(fileno $res_w, 11));
        (defined $r && defined $w && defined POSIX::dup2(10, 3) && defined POSIX::dup2(11, 4))
            or POSIX::_exit(126);
        POSIX::close($_) for 10, 11;
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', "$t_logs/chromium.log";
        open STDERR, '>&', \*STDOUT;
        { exec $chromium, qw(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
                             --disable-background-networking --disable-component-update
                             --disable-sync --disable-extensions --disable-dev-shm-usage
                             --remote-debugging-pipe),
              "--user-data-dir=$profile", '--window-size=1280,800', 'about:blank'; }
        POSIX::_exit(127);
    }
    close $cmd_r;
    close $res_w;

    my $target = cdp(undef, 'Target.createTarget', url => 'about:blank')->{targetId};
    my $s = cdp(undef, 'Target.attachToTarget', targetId => $target, flatten => JSON::PP::true)->{sessionId};
    cdp($s, 'Page.enable');
    viewport($s, 1280, 800);
    cdp($s, 'Page.navigate', url => $url);
    wait_event('Page.loadEventFired', 60);

    my $m = evaluate($s, <<'JS');
(() => {
  const d = document.documentElement;
  const nw = [...document.querySelectorAll('.nw')];
  const chips = [...document.querySelectorAll('p .chip')];
  const neutral = getComputedStyle(document.createElement('span')).backgroundColor;
  return {
    scrollWidth: d.scrollWidth, clientWidth: d.clientWidth, innerWidth: window.innerWidth,
    tableRight: Math.ceil(document.querySelector('table').getBoundingClientRect().right),
    rows: document.querySelectorAll('tr[class]').length,
    bars: document.querySelectorAll('td svg').length,
    responses: [...document.querySelectorAll('tr[class]')].filter(r => /expires|expired /.test(r.cells[2].textContent)).length,
    relative: nw.length,
    wrapped: nw.filter(e => e.getClientRects().length > 1 || e.getBoundingClientRect().height > 25).map(e => e.textContent),
    untitled: nw.filter(e => !/UTC$/.test(e.title)).length,
    zeroColoured: [...document.querySelectorAll('p .chip')].filter(e => / 0$/.test(e.textContent)
        && getComputedStyle(e).backgroundColor !== 'rgb(238, 238, 238)').map(e => e.textContent),
    header: document.querySelector('p').textContent,
    doubled: /unauthorized unauthorized/.test(document.body.textContent),
    viewportMeta: !!document.querySelector('meta[name=viewport]'),
    resources: performance.getEntriesByType('resource').map(e => e.name)
                   .filter(n => !/\/favicon\.ico$/.test(n)),
    height: d.scrollHeight,
  };
})()
JS
    my $png = "$t_logs/status-page-1280.png";
    my $size = screenshot($s, $png);
    screenshot($s, "$t_logs/status-page-1280-full.png", width => 1280, height => $m->{height});
    print "# 1280 x 800: scrollWidth $m->{scrollWidth}, clientWidth $m->{clientWidth}, table right edge "
        . "$m->{tableRight}, $m->{rows} rows, screenshot $png ($size bytes)\n";

    ok($m->{innerWidth} == 1280 && $m->{scrollWidth} <= $m->{clientWidth} && $m->{tableRight} <= $m->{clientWidth})
        or warn "# horizontal scrolling at 1280 px: " . JSON::PP->new->canonical->encode($m) . "\n";
    ok($m->{viewportMeta});
    my $j = JSON::PP::decode_json(GET_BODY('/rs-status?json'));
    ok($m->{rows} == @{ $j->{certificates} } && $m->{rows} > 30);
    # one validity bar per certificate with a response
    ok($m->{bars} > 5 && $m->{bars} == $m->{responses})
        or warn "# bars $m->{bars}, responses $m->{responses}\n";
    # relative times on one line, each with its UTC time on hover
    ok($m->{relative} > 20 && !@{ $m->{wrapped} }) or warn "# wrapped: @{ $m->{wrapped} }\n";
    ok($m->{untitled} == 0);
    ok(!@{ $m->{zeroColoured} }) or warn "# zero counts in colour: @{ $m->{zeroColoured} }\n";
    ok(!$m->{doubled});
    ok($m->{header} =~ /store ok/ && $m->{header} =~ /UTC/) or warn "# header: $m->{header}\n";
    # one self-contained document (the browser's own favicon request aside)
    ok(!@{ $m->{resources} }) or warn "# resources loaded: @{ $m->{resources} }\n";
    ok(-s $png > 10_000);

    # How narrow it still fits (for the README): the narrowest viewport
    # between 320 and 1280 px without horizontal scrolling.
    my ($lo, $hi) = (320, 1280);
    while ($hi - $lo > 10) {
        my $mid = int(($lo + $hi) / 2);
        viewport($s, $mid, 800);
        my $r = evaluate($s, 'document.documentElement.scrollWidth <= document.documentElement.clientWidth');
        ($r ? $hi : $lo) = $mid;
    }
    viewport($s, 1280, 800);
    # A sample for the README (docs/status-page.png): the first two rows of
    # each state, the rest of the table removed.
    my $top = JSON::PP->new->allow_nonref->encode(Apache::Test::vars()->{top_dir});
    my $h = evaluate($s, "const TOP = $top;\n" . <<'JS');
(() => {
  const seen = {};
  for (const r of [...document.querySelectorAll('tr[class]')])
    if ((seen[r.className] = (seen[r.className] || 0) + 1) > 2) r.remove();
  // this machine's paths are nobody's business in a README
  const w = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (w.nextNode()) w.currentNode.nodeValue = w.currentNode.nodeValue.split(TOP).join('...');
  return document.documentElement.scrollHeight;
  return Math.ceil(document.body.getBoundingClientRect().bottom) + 12;
})()
JS
    screenshot($s, "$t_logs/status-page-sample.png", width => 1280, height => $h);
    print "# fits without horizontal scrolling down to about $hi px\n";
    ok($hi <= 1280);
    eval { cdp(undef, 'Browser.close') };
}
